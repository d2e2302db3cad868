"""The committed wire fixtures are exactly what the official package encodes today."""

import subprocess

from support import PYTHON, REPO

FIXTURES = REPO / "tests" / "fixtures" / "wire"


def test_wire_fixtures_are_current(tmp_path):
    subprocess.run([PYTHON, str(REPO / "scripts" / "wire_golden.py"), "--out", str(tmp_path)],
                   check=True, timeout=120, stdout=subprocess.DEVNULL)
    fresh = {p.name: p.read_bytes() for p in tmp_path.glob("*.bin")}
    committed = {p.name: p.read_bytes() for p in FIXTURES.glob("*.bin")}
    assert len(fresh) == 7
    assert sorted(committed) == sorted(fresh), "fixture files differ from what the script writes"
    for name, data in fresh.items():
        assert committed[name] == data, (
            f"{name} differs from the official encoding: rerun scripts/wire_golden.py\n"
            f"  committed {committed[name].hex()}\n  official  {data.hex()}")
