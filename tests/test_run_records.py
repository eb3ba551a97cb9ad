"""Every run directory's summary says which code ran (commit, dirty), how (the command line), with what
(package versions), where (cores, CPU model and flags) and how long each stage took (wall and CPU)."""

import json
import subprocess
import time

from tunelens.runtime import CPU_FLAGS, StageTimer, finish_run, git_state, machine, run_record

CPUINFO = """processor\t: 0
model name\t: Example CPU @ 2.00GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_tile

processor\t: 1
model name\t: Example CPU @ 2.00GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_tile
"""


def test_machine_names_the_cpu_model_and_the_flags_that_matter():
    info = machine(CPUINFO)
    assert info["cpu_model"] == "Example CPU @ 2.00GHz"
    assert info["cpu_flags"] == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]  # CPU_FLAGS' order
    assert set(info["cpu_flags"]) <= set(CPU_FLAGS)
    assert info["cpus"] >= info["usable_cpus"] >= 1
    assert machine("")["cpu_flags"] == []  # no /proc/cpuinfo: no flag is claimed


def test_a_stage_timer_keeps_wall_and_cpu_time_per_stage():
    timer = StageTimer(lambda *args: None)

    def spin():  # 0.3 CPU-seconds of work, however long a busy machine takes to give them
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass

    timer("spin", spin)
    timer("sleep", time.sleep, 0.3)
    stages = timer.stages()
    assert list(stages) == ["spin", "sleep"]
    assert stages["spin"]["cpu_s"] >= 0.3 and stages["spin"]["wall_s"] >= 0.3  # wall >= CPU for one thread
    assert stages["sleep"]["wall_s"] >= 0.3 and stages["sleep"]["cpu_s"] < 0.1  # waiting costs no CPU


def git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_git_state_names_the_commit_and_a_dirty_tree(tmp_path):
    assert git_state(tmp_path) == (None, None)  # not a checkout: unknown, not a made-up commit
    git(tmp_path, "init", "-q")
    (tmp_path / "f.txt").write_text("one")
    git(tmp_path, "add", "f.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "scratch.txt").write_text("untracked files do not change what ran")
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "f.txt").write_text("two")
    assert git_state(tmp_path) == (head, True)


def test_finish_run_writes_the_record_into_summary_json(tmp_path):
    timer = StageTimer(lambda *args: None)
    timer("stage one", lambda: None)
    started = time.perf_counter()
    summary = finish_run(tmp_path, {"result": 1}, timer, started)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary and on_disk["result"] == 1
    record = on_disk["record"]
    assert set(record) == {"commit", "dirty", "changed_during_run", "command", "finished", "versions", "machine",
                           "stages"}
    assert list(record["stages"]) == ["stage one"] and set(record["stages"]["stage one"]) == {"wall_s", "cpu_s"}
    assert record["versions"]["torch"] and record["versions"]["python"]
    assert on_disk["machine"] == record["machine"] and on_disk["timings_s"] == {"stage one": 0.0}
    assert len(on_disk["invocations"]) == 1


def test_the_command_line_is_quoted_so_it_can_be_pasted():
    record = run_record({}, argv=["/opt/x/tunelens/__main__.py", "demo", "--out", "runs/a b"])
    assert record["command"] == "python -m tunelens demo --out 'runs/a b'"
    assert run_record({}, argv=["/opt/venv/bin/tunelens", "demo"])["command"] == "tunelens demo"
    assert run_record({}, argv=["bench/x.py", "--smoke"])["command"] == "bench/x.py --smoke"
