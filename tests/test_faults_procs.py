"""Several processes on one experiment: one writer per version, distinct claimed versions, locks freed by a kill."""

from __future__ import annotations

import signal
from pathlib import Path

import test_tube
from faultlib import Victim, count, script

OPENER = """
root, version, who, rows, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)  # a start line, so the processes race for the version
try:
    exp = Experiment(name="same", save_dir=root, version=None if version == "none" else int(version), record_git=False)
except test_tube.VersionInUseError as exc:
    say("in use", exc.log_dir)
    sys.exit(0)
say("open", exp.version)
for j in range(rows):
    exp.log({"who": who, "j": j})
    if j == rows // 2:
        exp.save()
        say("half")
if who.startswith("hold"):
    exp.save()
    say("holding")
    threading.Event().wait()
exp.close()
say("closed")
"""


def _race(tmp_path: Path, version: str, n: int, rows: int) -> list[Victim]:
    go = tmp_path / f"go-{version}-{rows}"
    path = script(tmp_path, OPENER, "opener.py")
    victims = [Victim(path, tmp_path, version, f"p{k}", rows, go) for k in range(n)]
    go.touch()
    for v in victims:
        assert v.wait(60) == 0, v.stderr()
    return victims


def test_two_processes_open_the_same_explicit_version(tmp_path: Path) -> None:
    """Of processes racing for one explicit version, the losers get VersionInUseError and no file mixes their rows."""
    for attempt in range(count(5, 30)):
        version = str(10 + attempt)
        victims = _race(tmp_path, version, 2, 3000)
        winners = [v for v in victims if any(x.startswith("open") for x in v.lines)]
        losers = [v for v in victims if any(x.startswith("in use") for x in v.lines)]
        assert len(winners) + len(losers) == 2 and winners
        table = test_tube.read(tmp_path / "same" / f"version_{version}")
        # Each writer's rows are whole and consecutive: a run resumed after another never interleaves.
        who = table.column("who").to_pylist()
        blocks = [w for k, w in enumerate(who) if k == 0 or who[k - 1] != w]
        assert len(blocks) == len(winners) and len(who) == 3000 * len(winners)
        assert table.column("step").to_pylist() == list(range(len(who)))


def test_concurrent_claims_get_distinct_versions(tmp_path: Path) -> None:
    """Eight processes started together without a version each claim a different one."""
    victims = _race(tmp_path, "none", 8, 10)
    versions = sorted(int(v.find("open").split()[1]) for v in victims)
    assert versions == list(range(8))


def test_a_killed_holder_frees_the_version(tmp_path: Path) -> None:
    """kill -9 of the process holding a version releases it; the next process resumes it without duplicates."""
    path = script(tmp_path, OPENER, "opener.py")
    go = tmp_path / "go"
    go.touch()
    holder = Victim(path, tmp_path, "0", "hold", 2000, go)
    holder.expect("holding")
    other = Victim(path, tmp_path, "0", "b", 10, go)
    assert other.wait(60) == 0 and other.find("in use")
    holder.signal(signal.SIGKILL)
    holder.wait(30)
    n = test_tube.read(tmp_path / "same" / "version_0").num_rows
    assert n == 2000  # everything saved before the kill
    after = Victim(path, tmp_path, "0", "c", 10, go)
    assert after.wait(60) == 0 and after.find("closed"), after.stderr()
    table = test_tube.read(tmp_path / "same" / "version_0")
    assert table.column("step").to_pylist() == list(range(n + 10))
    assert table.column("who").to_pylist() == ["hold"] * n + ["c"] * 10
