"""Distributed batch protection: ``python -m fastprotect.cluster IN OUT`` on Ray Data.

IN is a folder, a file or a URI (``s3://bucket/photos``, ``gs://...``, any fsspec URI); OUT a
folder or URI. A pool of Ray actors (one GPU each when the cluster has GPUs, else CPUs) loads the
Protector once per actor and writes ``<stem>_protected.png`` per input, byte-identical to
``python -m fastprotect IN -o OUT`` with the same settings, plus ``report.parquet`` and
``report.json`` (one row per input). A bad file is a report row, not a failed job; a rerun skips
inputs whose output exists, so a killed job resumes. Exit status as the CLI's: 0 every input
protected (or already done), 1 some failed, 2 bad arguments, no weights or no Ray.

Importing this module does not import Ray (nor torch): both load when the job runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from .argparsing import OneLineArgumentParser
from .cli import add_protection_options, check_protection_options
from .cluster_job import (
    STATUS_EXISTS,
    STATUS_FAILED,
    STATUS_OK,
    ProtectSettings,
    ProtectWorker,
    check_writable,
    existing_names,
    list_inputs,
    load_protector,
    one_line,
    plan_outputs,
    remove_stale_temporaries,
    report_row,
    resolve,
    write_report,
)

if TYPE_CHECKING:
    from .protect import Protector

ROWS_PER_BLOCK = 16  # a block is Ray's unit of retry: small blocks redo little after a crash


class UsageError(Exception):
    """Misuse the user can fix (bad path, no weights, no Ray): one line on stderr, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m fastprotect.cluster",
                            description="Protect a whole collection with a pool of Ray actors (Ray Data).")
    parser.add_argument("input", help="folder, file or URI (s3://..., gs://..., any fsspec URI) of the images")
    parser.add_argument("output", help="folder or URI for the PNGs and report.parquet / report.json")
    parser.add_argument("--recursive", action="store_true", help="search folders recursively")
    parser.add_argument("--all-files", action="store_true", help="take every file, not only image suffixes (non-images get a report row)")
    add_protection_options(parser)
    parser.set_defaults(device="auto")
    parser.add_argument("--actors", type=int, default=None, help="actor pool size (default: one per GPU, else one per --cpus-per-actor CPUs)")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs per CPU actor, also its torch threads (default 1)")
    parser.add_argument("--max-restarts", type=int, default=3, help="times a crashed actor is restarted and its batch retried (default 3)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_protection_options(parser, args)
    if args.actors is not None and args.actors < 1:
        parser.error("--actors must be >= 1")
    if args.cpus_per_actor <= 0:
        parser.error("--cpus-per-actor must be > 0")
    if args.max_restarts < 0:
        parser.error("--max-restarts must be >= 0")
    return args


def settings_from_args(args: argparse.Namespace, device: str) -> ProtectSettings:
    return ProtectSettings(
        eta_levels=args.eta, target=args.target, adaptive_strength=args.adaptive_strength, refine_steps=args.refine_steps,
        seed=args.seed, checkpoint=args.checkpoint, per_image=args.per_image, encoder_kind=args.encoder_kind,
        encoder_source=args.encoder_source, lpips_backbone=args.lpips_backbone, device=device, half=args.half,
        max_pixels=args.max_pixels, min_energy=args.min_energy,
    )


# ------------------------------------------------------------------------------ Ray
def ensure_ray(address: str | None) -> None:
    """Connect to ``address`` / RAY_ADDRESS, or start a local instance on this machine's cores.

    A caller that already ran ``ray.init`` (tests, notebooks) keeps its instance.
    """
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    try:
        import ray
    except ImportError:
        raise UsageError("Ray is not installed: pip install 'ray[data]'") from None
    if ray.is_initialized():
        return
    import logging

    address = address or os.environ.get("RAY_ADDRESS")
    local = {} if address else {"num_cpus": os.cpu_count(), "include_dashboard": False}
    try:
        ray.init(address=address, logging_level=logging.WARNING, **local)
    except Exception as error:  # unreachable cluster, no /tmp space: the user's to fix
        raise UsageError(f"cannot start or reach Ray: {one_line(error)}") from None


@dataclass
class Pool:
    """How the actors are placed: ``size`` actors, each with ``gpus`` GPUs and ``cpus`` CPUs, on ``device``."""

    size: int
    gpus: float
    cpus: float
    device: str


def plan_pool(args: argparse.Namespace, resources: dict[str, float], pending: int) -> Pool:
    """One actor per GPU when the cluster has GPUs (unless ``--device cpu``), else per ``--cpus-per-actor`` CPUs.

    Never more actors than inputs; ``--actors`` overrides the count.
    """
    gpus = int(resources.get("GPU", 0))
    use_gpu = args.device.startswith("cuda") or (args.device == "auto" and gpus > 0)
    if use_gpu and gpus == 0:
        raise UsageError("--device cuda: the Ray cluster has no GPUs")
    if use_gpu:
        size, device = args.actors or gpus, "cuda" if args.device == "auto" else args.device
        return Pool(max(1, min(size, pending)), 1.0, 1.0, device)
    size = args.actors or max(1, int(resources.get("CPU", 1) // args.cpus_per_actor))
    return Pool(max(1, min(size, pending)), 0.0, args.cpus_per_actor, "cpu")


def run_pool(rows: list[dict[str, str]], settings: ProtectSettings, pool: Pool, input_fs, output_fs,
             factory: Callable[[], "Protector"] | None, max_restarts: int) -> list[dict[str, Any]]:
    """Protect ``rows`` ({path, output}) on the actor pool; the report rows that came back (any order).

    Blocks whose actor died more than ``max_restarts`` times are tolerated (their rows come back
    missing and the caller reports them), so one poisonous file cannot fail the whole job.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.max_errored_blocks = -1
    blocks = min(len(rows), max(4 * pool.size, math.ceil(len(rows) / ROWS_PER_BLOCK)))
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    with warnings.catch_warnings():  # Ray 2.60 marks max_restarts/max_task_retries as "ray_remote_args", still honoured
        warnings.simplefilter("ignore")
        dataset = dataset.map_batches(
            ProtectWorker, batch_size=1, batch_format="pyarrow", zero_copy_batch=True,
            fn_constructor_kwargs={"settings": settings, "input_fs": input_fs, "output_fs": output_fs,
                                   "factory": factory, "threads": max(1, int(pool.cpus))},
            compute=ray.data.ActorPoolStrategy(size=pool.size), num_cpus=pool.cpus, num_gpus=pool.gpus or None,
            max_restarts=max_restarts, max_task_retries=max_restarts,
        )
    results: list[dict[str, Any]] = []
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        results.extend(batch.to_pylist())
    return results


# ------------------------------------------------------------------------------ the job
@dataclass
class JobResult:
    """Report rows in input order, where the report went, seconds spent, what Ray's pool looked like."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    report_paths: list[str] = field(default_factory=list)
    seconds: float = 0.0
    pool: Pool | None = None
    removed_temporaries: int = 0

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def exit_status(self) -> int:
        return 1 if self.count(STATUS_FAILED) else 0


def run_job(args: argparse.Namespace, factory: Callable[[], "Protector"] | None = None) -> JobResult:
    """List, plan, skip what is done, protect the rest on Ray, write the report. Raises UsageError."""
    start = time.perf_counter()
    input_fs, input_root = _resolve(args.input)
    output_fs, output_root = _resolve(args.output)
    output_root = output_root.rstrip("/")
    try:
        paths = list_inputs(input_fs, input_root, recursive=args.recursive, all_files=args.all_files)
    except (FileNotFoundError, OSError) as error:
        raise UsageError(one_line(error)) from None
    if not paths:
        raise UsageError(f"no input images found in {args.input}")
    try:
        output_fs.create_dir(output_root, recursive=True)
        check_writable(output_fs, output_root)  # an existing read-only folder passes create_dir
        present = existing_names(output_fs, output_root)
    except OSError as error:  # read-only place, a file in the way, missing credentials
        raise UsageError(f"cannot write to {args.output}: {one_line(error)}") from None
    result = JobResult(removed_temporaries=remove_stale_temporaries(output_fs, output_root, present))
    planned = [{"path": path, "output": f"{output_root}/{name}"} for path, name in zip(paths, plan_outputs(paths))]
    todo = [row for row in planned if row["output"].rsplit("/", 1)[1] not in present]
    done: dict[str, dict[str, Any]] = {}
    if todo:
        ensure_ray(args.address)
        import ray

        pool = plan_pool(args, ray.cluster_resources(), len(todo))
        settings = settings_from_args(args, pool.device)
        _check_weights(factory or partial(load_protector, replace(settings, device="cpu")))  # the driver may lack a GPU
        factory = factory or partial(load_protector, settings)
        result.pool = pool
        done = {row["path"]: row for row in run_pool(todo, settings, pool, input_fs, output_fs, factory, args.max_restarts)}
    result.rows = [_final_row(row, done, output_fs) for row in planned]
    result.report_paths = write_report(output_fs, output_root, result.rows)
    result.seconds = time.perf_counter() - start
    return result


def _resolve(uri: str):
    try:
        return resolve(uri)
    except ValueError as error:
        raise UsageError(one_line(error)) from None


def _check_weights(factory: Callable[[], "Protector"]) -> None:
    """Load the Protector once in the driver, so missing weights end the job at once with exit 2
    instead of as failing actors. Costs one model load (about a second for TAEF2 + LPIPS)."""
    from .hub import WeightsUnavailableError

    try:
        factory()
    except (WeightsUnavailableError, ValueError, OSError) as error:
        raise UsageError(one_line(error)) from None


def _final_row(planned: dict[str, str], done: dict[str, dict[str, Any]], output_fs) -> dict[str, Any]:
    """The row an actor returned; else "exists" (done before this run) or "failed" (its actor kept dying)."""
    import pyarrow.fs as pafs

    path, output = planned["path"], planned["output"]
    if path in done:
        return done[path]
    if output_fs.get_file_info(output).type == pafs.FileType.File:
        return report_row(path, output, STATUS_EXISTS, "output already exists")
    return report_row(path, output, STATUS_FAILED, "its worker crashed on every retry (see the Ray logs)")


def summary(result: JobResult) -> str:
    ok, exists, failed = (result.count(s) for s in (STATUS_OK, STATUS_EXISTS, STATUS_FAILED))
    pool = result.pool
    where = f" on {pool.size} actor(s), {'1 GPU' if pool.gpus else f'{pool.cpus:g} CPU'} each" if pool else ""
    rate = f" ({ok / result.seconds:.2f} images/s)" if ok and result.seconds else ""
    return (f"{ok} protected, {exists} already done, {failed} failed in {result.seconds:.1f} s{rate}{where}; "
            f"report: {' and '.join(result.report_paths)}")


def main(argv: Sequence[str] | None = None, *, factory: Callable[[], "Protector"] | None = None) -> int:
    """The command line. ``factory`` builds each actor's Protector (tests pass tiny models)."""
    args = parse_args(argv)
    try:
        result = run_job(args, factory)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # Ray itself gave up; finished outputs stay
        if "creation task" in str(error):  # no actor could load the Protector: weights missing on the workers
            print(f"error: the actors could not load the Protector (weights on every node?): {one_line(error)}", file=sys.stderr)
            return 2
        print(f"error: the job stopped: {one_line(error)}; rerun the same command to resume", file=sys.stderr)
        return 1
    for row in result.rows:
        if row["status"] == STATUS_FAILED:
            print(f"failed {row['path']}: {row['reason']}", file=sys.stderr)
    if result.removed_temporaries:
        print(f"note: removed {result.removed_temporaries} half-written file(s) of an interrupted run", file=sys.stderr)
    print(summary(result))
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())
