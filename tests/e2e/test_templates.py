"""The plugin project templates (templates/) build outside this repository, against the
packaged SDKs only, and pass their own sample through `infergate check --model`.

Each test generates a project with `infergate plugin new` into a temporary folder outside the
repository and builds it there with `infergate plugin build`:
  - Rust: against the `.crate` that `cargo package` writes for plugin-sdk/, unpacked and used
    as a path dependency (a crate file is a tarball of the crate with its workspace
    inheritance already resolved). The build reuses plugins/target, where
    scripts/build-plugins.sh compiled the same dependencies with the same profile, and pins
    them with plugins/Cargo.lock, so only the SDK and the template compile (~30 s on 2 cores).
  - Python: against the SDK's wheel (`pip wheel plugin-sdk/python`), installed into a fresh
    venv outside the repository (dependencies from the pip cache), ~30 s.
Cheap enough for CI, where they run in the e2e stage (they need the gateway binary).
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

import pytest

from support import REPO, gateway_bin

TEMPLATES = REPO / "templates"
CACHE = Path(os.environ.get("INFERGATE_CACHE", Path.home() / ".cache" / "infergate"))


def generate(lang: str, dest: Path, name: str, sdk_path: Path | None = None) -> Path:
    """`infergate plugin new NAME --lang LANG --dir DEST [--sdk-path SDK]`."""
    cmd = [gateway_bin(), "plugin", "new", name, "--lang", lang, "--dir", dest]
    if sdk_path:
        cmd += ["--sdk-path", sdk_path]
    run(cmd, cwd=dest.parent)
    assert not list(dest.rglob("*.tmpl")), "a template suffix was left"
    return dest


def run(cmd, cwd, **kw):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done


def check(project: Path) -> None:
    done = run([gateway_bin(), "check", "--model", project], cwd=project, timeout=300)
    assert "samples: 1 passed, 0 failed" in done.stdout, done.stdout


@pytest.fixture
def outside():
    """A folder outside the repository (the system temp dir; never under REPO)."""
    path = Path(tempfile.mkdtemp(prefix="infergate-template-"))
    assert REPO not in path.parents
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_rust_template_builds_against_the_packaged_crate(outside):
    run(["cargo", "package", "-p", "infergate-plugin-sdk", "--no-verify", "--allow-dirty",
         "--target-dir", outside / "package-target"], cwd=REPO, timeout=600)
    crate = next((outside / "package-target" / "package").glob("infergate-plugin-sdk-*.crate"))
    with tarfile.open(crate) as tar:
        tar.extractall(outside / "sdk", filter="data")
    sdk = next((outside / "sdk").iterdir())
    assert "workspace = true" not in (sdk / "Cargo.toml").read_text()
    project = generate("rust", outside / "demo", "demo", sdk)
    shutil.copy(REPO / "plugins" / "Cargo.lock", project / "Cargo.lock")
    # Outside the repository its rust-toolchain.toml does not apply: name the same toolchain
    # (it has the wasm32-wasip2 target, and its build of the dependencies is in plugins/target).
    channel = tomllib.loads((REPO / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    env = {**os.environ, "RUSTUP_TOOLCHAIN": channel,
           "CARGO_TARGET_DIR": str(REPO / "plugins" / "target")}
    run([gateway_bin(), "plugin", "build", project], cwd=project, env=env, timeout=900)
    check(project)


def test_python_template_builds_against_the_sdk_wheel(outside):
    env = {**os.environ, "PIP_CACHE_DIR": str(CACHE / "pip")}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", outside / "wheel",
         REPO / "plugin-sdk" / "python"], cwd=outside, env=env, timeout=300)
    wheel = next((outside / "wheel").glob("infergate_plugin_sdk-*.whl"))
    venv = outside / "venv"
    run(["python3", "-m", "venv", venv], cwd=outside, env=env, timeout=120)
    run([venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", wheel],
        cwd=outside, env=env, timeout=600)
    project = generate("python", outside / "demo", "demo")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    run([gateway_bin(), "plugin", "build", project], cwd=outside, env=env, timeout=300)
    check(project)
    # Unchanged inputs: the next build is skipped, and the component left as it was.
    before = (project / "plugin.wasm").stat().st_mtime_ns
    done = run([venv / "bin" / "infergate-plugin", "build", project], cwd=outside, env=env)
    assert "up to date" in done.stderr and (project / "plugin.wasm").stat().st_mtime_ns == before
