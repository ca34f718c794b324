"""Fleet scaling on a simulated Ray cluster: the built-in model's 6-variant fleet on K local Ray nodes.

The six variants of benchmarks/fleet.py (Core ML fp16 and 6-bit for two iPhones, QNN W8A16 for two
Snapdragons; UNet only, no emulated verification) of the built-in model, built with `fusionc compile --config
fleet.toml --executor ray --ray-address ADDR` on a cluster of K worker nodes of 1 CPU each
(ray.cluster_utils.Cluster: a head with 0 CPUs, so every variant runs on a worker node, and K raylets, each
its own node with its own object store), for K in --workers. The shared work (load, torch trajectories,
export, generic passes) is put in the cache once before the runs (a local fleet, measured too) and every run
reuses it, so the runs time what a cluster spreads: the variants' lowerings. The same fleet in-process and
with `--jobs 2` (two worker processes) on the same warm cache are the single-machine peers.

What this can show: that the variants spread over the nodes (the report's `node` per variant), how the
fleet's wall time follows the number of workers, and where it stops falling: at the longest single
variant (one lowering dominates). What it cannot: real speed-up past 2 workers. All K nodes share this
machine's 2 cores (and its memory, with other sessions), so above 2 workers the lowerings time-slice the
same cores; the JSON therefore also holds, for each K, the makespan a cluster of K real 1-CPU machines would
have (longest-first schedule of the per-variant times measured on 1 worker: a model, labelled as such).

    /work/tools/heavy python benchmarks/fleet_scaling.py --workers 1,2,3,4,6

Writes benchmarks/results/fleet_scaling.json after every run (git revision, machine load before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import fleet  # noqa: E402
from fleet import RESULTS, run_tree, write_config  # noqa: E402
from provenance import Provenance, load_average  # noqa: E402

NODE_OBJECT_STORE = 100 << 20  # Ray's minimum is 75 MB; the fleet moves only the small checkpoint view


def longest_first_makespan(seconds: list[float], workers: int) -> float:
    """Wall time of `seconds`-long independent tasks on `workers` machines, longest task first to the idlest."""
    loads = [0.0] * workers
    for s in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += s
    return max(loads)


def run_on_cluster(workers: int, config: Path, report: Path, env: dict) -> dict:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": NODE_OBJECT_STORE, "include_dashboard": False})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1, object_store_memory=NODE_OBJECT_STORE)
        cluster.wait_for_nodes()
        command = [sys.executable, "-m", "fusionc.cli", "compile", "--config", str(config), "--executor", "ray",
                   "--ray-address", cluster.address, "--report", str(report)]
        load_before = load_average()
        entry = run_tree(command, env)
        entry["load_average_before_after"] = [load_before, load_average()]
    finally:
        cluster.shutdown()
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,3,4,6")
    parser.add_argument("--variants", default=None, help="comma list of variant names (default: all six)")
    parser.add_argument("--out", type=Path, default=RESULTS / "fleet_scaling.json")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/fleet_scaling"))
    args = parser.parse_args()
    args.work = args.work.resolve()
    if args.variants:
        fleet.VARIANTS[:] = [v for v in fleet.VARIANTS if v["name"] in args.variants.split(",")]
    prov = Provenance.start(None)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    from fusionc.models import BUILTIN_CHECKPOINT

    env = dict(os.environ, FUSIONC_CACHE="", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    # Ray runs its workers 15 nice levels below the driver (its worker_niceness); the other ways run at the
    # driver's, so on a shared machine the Ray way would lose CPU to everything else: same priority for all ways
    env.setdefault("RAY_worker_niceness", "0")
    env.pop("RAY_ADDRESS", None)
    cache = args.work / "cache"
    out_path = args.out
    result: dict = {"benchmark": "fleet_scaling", "model": "the built-in tiny_sd UNet; components: unet; no "
                    "emulated verification", "variants": fleet.VARIANTS,
                    "cluster": "ray.cluster_utils.Cluster on this machine: a 0-CPU head and K worker nodes of "
                               "1 CPU each, all sharing its 2 cores", "runs": {}}

    def save() -> None:
        result["provenance"] = prov.finish()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1) + "\n")

    def summarize(entry: dict, report_path: Path) -> dict:
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        variants = report.get("variants", [])
        shared = report.get("shared", {}).get("timings", {})
        shared_s = shared.get("fleet: load checkpoint", 0) + shared.get(
            "fleet: shared work (trajectory, export, generic passes)", 0)
        entry.update({"fleet_wall_s": report.get("wall_s"), "shared_s": round(shared_s, 1),
                      "variants_phase_s": round(report.get("wall_s", 0) - shared_s, 1) if report else None,
                      "per_variant_s": {v["name"]: v["wall_s"] for v in variants},
                      "status": {v["name"]: v["status"] for v in variants},
                      "nodes_used": len({v["node"] for v in variants}),
                      "longest_variant_s": max((v["wall_s"] for v in variants), default=None)})
        return entry

    # the shared work, once, into the cache every run reuses (and the in-process fleet as the reference)
    root = args.work / "warm"
    root.mkdir(parents=True)
    config = write_config(root, BUILTIN_CHECKPOINT, root / "builds", cache)
    entry = run_tree([sys.executable, "-m", "fusionc.cli", "compile", "--config", str(config), "--report",
                      str(root / "report.json")], env)
    result["runs"]["local, cold cache (fills it)"] = summarize(entry, root / "report.json")
    save()
    shutil.rmtree(root / "builds", ignore_errors=True)
    entry = run_tree([sys.executable, "-m", "fusionc.cli", "compile", "--config", str(config), "--report",
                      str(root / "report2.json")], env)
    result["runs"]["local, warm cache"] = summarize(entry, root / "report2.json")
    save()
    shutil.rmtree(root / "builds", ignore_errors=True)
    print("local:", result["runs"]["local, warm cache"]["wall_s"], "s", flush=True)
    entry = run_tree([sys.executable, "-m", "fusionc.cli", "compile", "--config", str(config), "--jobs", "2",
                      "--report", str(root / "report3.json")], env)
    result["runs"]["local --jobs 2, warm cache"] = summarize(entry, root / "report3.json")
    save()
    shutil.rmtree(root / "builds", ignore_errors=True)
    one_worker: list[float] | None = None
    for workers in [int(w) for w in args.workers.split(",")]:
        run_root = args.work / f"ray_{workers}"
        run_root.mkdir(parents=True)
        config = write_config(run_root, BUILTIN_CHECKPOINT, run_root / "builds", cache)
        entry = summarize(run_on_cluster(workers, config, run_root / "report.json", env), run_root / "report.json")
        entry["workers"] = workers
        if workers == 1 and entry["per_variant_s"]:
            one_worker = list(entry["per_variant_s"].values())
        if one_worker:
            entry["model_makespan_on_k_real_cpus_s"] = round(longest_first_makespan(one_worker, workers), 1)
        result["runs"][f"ray, {workers} worker node{'s' if workers > 1 else ''}"] = entry
        save()
        shutil.rmtree(run_root / "builds", ignore_errors=True)
        print(f"ray {workers}: {entry['wall_s']} s (variants {entry['variants_phase_s']} s, "
              f"{entry['nodes_used']} nodes)", flush=True)
        time.sleep(2)
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
