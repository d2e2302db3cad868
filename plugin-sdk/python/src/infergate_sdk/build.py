"""`infergate-plugin build`: a plugin folder in, `plugin.wasm` (a WebAssembly component) out.

    infergate-plugin build [DIR] [-o OUT] [--module plugin] [--force]

DIR (default `.`) holds `plugin.py` (or the module named by `--module`) defining
`preprocess(req)` and/or `postprocess(outputs, context)`, and optionally `requirements.txt`
with pure-Python dependencies. The command:

1. checks the module: which of the two functions it defines (that picks the WIT world:
   `plugin`, `preprocessor` or `postprocessor`) and that every import is at top level —
   componentize-py runs the module once at build time and snapshots the result, so a
   function-level import would run, and need its files, on every request;
2. installs `requirements.txt` into `.infergate-build/site` and refuses any C extension,
   naming the package (only pure Python runs inside the component);
3. runs componentize-py against the WIT this SDK ships (`infergate_sdk/wit/plugin.wit`, the
   gateway's own contract file), bundling the module, the SDK, pypng and the dependencies;
4. writes OUT (default `DIR/plugin.wasm`) by renaming, so a gateway watching the folder
   never loads half a file.

Builds take ~10 s and are not byte-reproducible, so each one misses the gateway's compile
cache. The command skips the build when a hash of every input (sources, requirements, SDK,
WIT, componentize-py version) matches the one recorded beside the last output; `--force`
builds anyway.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

BUILD_DIR = ".infergate-build"
COMPONENTIZE_PY = "0.25.1"
SDK_DIR = Path(__file__).resolve().parent
WIT_DIR = SDK_DIR / "wit"
ENTRY = "infergate_plugin_entry"


class BuildError(Exception):
    """A problem the plugin's author can fix; printed without a traceback."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infergate-plugin",
                                     description="Build infergate plugins written in Python.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build DIR's plugin module into a WebAssembly component")
    b.add_argument("dir", nargs="?", default=".", help="the plugin folder (default: .)")
    b.add_argument("-o", "--output", help="where to write the component (default: DIR/plugin.wasm)")
    b.add_argument("--module", default="plugin", help="the module defining preprocess/postprocess")
    b.add_argument("--force", action="store_true", help="build even if no input changed")
    b.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    sub.add_parser("wit", help="print the path of the WIT contract this SDK builds against")
    args = parser.parse_args(argv)
    if args.command == "wit":
        print(WIT_DIR / "plugin.wit")
        return 0
    try:
        out = build(Path(args.dir), Path(args.output) if args.output else None, args.module,
                    force=args.force, quiet=args.quiet)
    except BuildError as e:
        print(f"infergate-plugin: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(out)
    return 0


def build(project: Path, output: Path | None = None, module: str = "plugin", *,
          force: bool = False, quiet: bool = False) -> Path:
    """Builds the component and returns its path (see the module docs)."""
    project = project.resolve()
    source = _module_file(project, module)
    world = _world(source)
    output = (output or project / "plugin.wasm").resolve()
    work = project / BUILD_DIR
    requirements = project / "requirements.txt"
    digest = _input_digest(project, work, world, requirements)
    stamp = output.with_name(output.name + ".inputs")
    if not force and output.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        _say(quiet, f"{output.name} is up to date (inputs unchanged; --force rebuilds)")
        return output
    work.mkdir(exist_ok=True)
    site = work / "site"
    _install_requirements(requirements, site, quiet)
    runtime = _stage_runtime(work)
    entry = work / f"{ENTRY}.py"
    entry.write_text(_entry_source(module, world))
    package, version = _wit_package()
    tmp = output.with_name(output.name + ".tmp")
    cmd = [_componentize_py(), "-d", str(WIT_DIR), "-w", f"{package}/{world}@{version}",
           "componentize", "-p", str(project), "-p", str(work), "-p", str(runtime),
           "-p", str(site), "-o", str(tmp), ENTRY]
    _say(quiet, f"building {source.name} (world {world}@{version}) with componentize-py")
    # No VIRTUAL_ENV: componentize-py would add that venv's site-packages (the build tool's
    # own, C extensions included) to the plugin's path; only what is listed above belongs.
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"componentize-py failed for {source}:\n{_explain(done.stderr + done.stdout)}")
    tmp.replace(output)
    stamp.write_text(digest + "\n")
    _say(quiet, f"wrote {output} ({output.stat().st_size // 1024} KiB)")
    return output


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def _module_file(project: Path, module: str) -> Path:
    for candidate in (project / f"{module}.py", project / module / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise BuildError(f"{project} has no {module}.py (the module defining preprocess and/or "
                     f"postprocess); name another with --module")


def _world(source: Path) -> str:
    """`plugin`, `preprocessor` or `postprocessor`, from the functions the module defines;
    refuses imports inside functions (see the module docs)."""
    try:
        tree = ast.parse(source.read_text(), str(source))
    except SyntaxError as e:
        raise BuildError(f"{source}:{e.lineno}: {e.msg}") from None
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    raise BuildError(
                        f"{source}:{inner.lineno}: import inside function {node.name}(); move "
                        "it to the top of the module (the plugin is initialized at build time, "
                        "and only what is imported then is in the component)")
    pre, post = "preprocess" in defined, "postprocess" in defined
    if pre and post:
        return "plugin"
    if pre:
        return "preprocessor"
    if post:
        return "postprocessor"
    raise BuildError(f"{source} defines neither preprocess(req) nor postprocess(outputs, "
                     f"context) at top level")


def _wit_package() -> tuple[str, str]:
    text = (WIT_DIR / "plugin.wit").read_text()
    m = re.search(r"^package\s+([\w:-]+)@([\w.+-]+)\s*;", text, re.M)
    if not m:
        raise BuildError(f"{WIT_DIR / 'plugin.wit'} has no package line")
    return m.group(1), m.group(2)


def _componentize_py() -> str:
    here = Path(sys.executable).parent / "componentize-py"
    found = str(here) if here.exists() else shutil.which("componentize-py")
    if not found:
        raise BuildError(f"componentize-py is not installed; pip install "
                         f"componentize-py=={COMPONENTIZE_PY} (a dependency of this SDK)")
    return found


def _install_requirements(requirements: Path, site: Path, quiet: bool) -> None:
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    if not requirements.exists() or not _requirement_lines(requirements):
        return
    _say(quiet, f"installing {requirements.name} into {site}")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                           "--disable-pip-version-check", "--target", str(site),
                           "-r", str(requirements)], capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"pip could not install {requirements}:\n{done.stderr.strip()}")
    native = _c_extensions(site)
    if native:
        lines = "\n".join(f"  {name}: {files}" for name, files in native.items())
        raise BuildError(
            f"{requirements} pulls in C extensions, which cannot run inside a WebAssembly "
            f"plugin (only pure-Python packages can be bundled):\n{lines}\n"
            "Use a pure-Python alternative; for images and tensors, infergate_sdk.ops does "
            "what Pillow and numpy are usually used for (decode, resize, normalize, top-k).")


def _requirement_lines(requirements: Path) -> list[str]:
    return [l for l in (s.split("#")[0].strip() for s in requirements.read_text().splitlines()) if l]


def _c_extensions(site: Path) -> dict[str, str]:
    """Distribution → its compiled files, for every installed distribution that has any."""
    found: dict[str, list[str]] = {}
    owner = {}
    for dist in site.glob("*.dist-info"):
        name = dist.name.split("-")[0]
        for line in (dist / "RECORD").read_text().splitlines() if (dist / "RECORD").exists() else []:
            owner[line.split(",")[0]] = name
        wheel = dist / "WHEEL"
        if wheel.exists() and "Root-Is-Purelib: false" in wheel.read_text():
            found.setdefault(name, [])
    for f in site.rglob("*"):
        if f.suffix in (".so", ".pyd", ".dylib", ".dll") or ".so." in f.name:
            rel = f.relative_to(site).as_posix()
            found.setdefault(owner.get(rel, rel.split("/")[0]), []).append(rel)
    return {k: ", ".join(v[:3]) + (" …" if len(v) > 3 else "") or "a platform-specific wheel"
            for k, v in sorted(found.items())}


def _stage_runtime(work: Path) -> Path:
    """The SDK and pypng, copied (without this build tool) into WORK/runtime."""
    runtime = work / "runtime"
    shutil.rmtree(runtime, ignore_errors=True)
    shutil.copytree(SDK_DIR, runtime / "infergate_sdk",
                    ignore=shutil.ignore_patterns("__pycache__", "build.py", "wit"))
    try:
        import png  # the SDK's dependency; pure Python, one file
    except ImportError:
        raise BuildError("pypng is not installed (a dependency of this SDK); pip install pypng") from None
    shutil.copy(png.__file__, runtime / "png.py")
    return runtime


def _entry_source(module: str, world: str) -> str:
    methods = []
    if world in ("plugin", "preprocessor"):
        methods.append("    def preprocess(self, req):\n"
                       "        return _glue.preprocess(req, _plugin.preprocess)\n")
    if world in ("plugin", "postprocessor"):
        methods.append("    def postprocess(self, outputs, context):\n"
                       "        return _glue.postprocess(outputs, context, _plugin.postprocess)\n")
    return ("# Generated by infergate-plugin build: the component's exports, calling the plugin.\n"
            "import gc\n\n"
            "import wit_world\n"
            "from infergate_sdk import _glue\n"
            f"import {module} as _plugin\n\n"
            "# Everything imported so far is in the build-time snapshot every call starts from.\n"
            "# Freezing it keeps the cycle collector from traversing (and so copy-on-write\n"
            "# faulting in) the whole snapshot heap during a request; objects a call creates\n"
            "# are still collected.\n"
            "gc.collect()\n"
            "gc.freeze()\n\n\n"
            "class WitWorld(wit_world.WitWorld):\n" + "\n".join(methods))


def _input_digest(project: Path, work: Path, world: str, requirements: Path) -> str:
    h = hashlib.sha256()
    h.update(f"world={world} componentize-py={_version('componentize-py')} "
             f"sdk={_version('infergate-plugin-sdk')}\n".encode())
    roots = [p for p in project.rglob("*") if p.is_file() and work not in p.parents
             and p.suffix in (".py", ".txt", ".toml", ".json", ".cfg")
             and "samples" not in p.relative_to(project).parts]
    sdk = [p for p in SDK_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for p in sorted(roots) + sorted(sdk):
        h.update(str(p).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _explain(output: str) -> str:
    text = output.strip()
    if "ModuleNotFoundError" in text or "No module named" in text:
        text += ("\n(a module the plugin imports is not bundled: list pure-Python dependencies "
                 "in requirements.txt; C extensions such as numpy or Pillow cannot be used — "
                 "see infergate_sdk.ops)")
    return text


if __name__ == "__main__":
    sys.exit(main())
