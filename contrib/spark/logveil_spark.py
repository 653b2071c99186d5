#!/usr/bin/env python3
"""logveil on Apache Spark: the same tables as `logveil run`, byte for byte, from a sharded run.

    spark-submit contrib/spark/logveil_spark.py --pipeline site.toml --input 's3://logs/2026-12-01/*.gz' \
        --output s3://analytics/site --date 2026-12-01 --buckets 64 --logveil /opt/logveil/logveil

(or `python3 contrib/spark/logveil_spark.py …` where `pip install pyspark` put Spark on the path).

The stage work runs in the logveil binary (`logveil stage …`, docs/SCALING.md); this script only
moves each stage's sealed files through Spark:

1. plan (driver): `logveil stage plan` decides the inputs, buckets and run id in a private work
   directory, with a run key and the keys derived for the run's days (never a master).
2. shard (`mapInArrow`, one Spark task per group of inputs): each task writes the plan, the run
   key and the derived keys into its own private directory, runs `logveil stage shard`, and
   hands Spark the sealed events of every bucket and its sealed summary. Spark is given input
   names; raw lines, addresses and user agents never leave the task.
3. gather (driver): the summaries (small) are collected; `logveil stage gather` updates the
   state dir and writes each bucket's sealed context.
4. reduce (`groupBy(bucket).applyInArrow`, one task per bucket): Spark's shuffle brings a
   bucket's events and context together; `logveil stage reduce` makes its partial tables.
5. merge (driver): the partials come to the driver, a partition at a time; `logveil stage merge` applies k or the
   noise once, globally, and publishes exactly as `logveil run` does.

Keys reach the tasks in a broadcast variable, never in a command line, the Spark UI, the event
log or an executor log, and are written there only to 0600 files in the task's 0700 directory
under the application's local directories, removed when the task ends (and by Spark when the
application ends, if the task was killed). Intermediates are sealed by logveil (ChaCha20-Poly1305) and, in
Spark, travel over an authenticated, encrypted network and are encrypted on local disk
(`spark.authenticate`, `spark.network.crypto.enabled`, `spark.io.encryption.enabled`, set here);
the work directory and Spark's local files are gone when the job ends. A task that fails is
retried by Spark and gives the same result; a stage that fails for good ends the job with a
non-zero exit and a message, and nothing is published.
"""

import argparse
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time

# Payloads travel in pieces of at most this many bytes (Arrow binary columns hold 2 GiB).
PIECE = 32 << 20
SCHEMA = "bucket int, name string, part int, payload binary"


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="logveil_spark.py",
        description="Run a logveil pipeline on Spark; the tables equal `logveil run`'s byte for byte.",
    )
    p.add_argument("--pipeline", help="pipeline file (default: the embedded demo)")
    p.add_argument("--input", action="append", default=[], help="input path or glob, local or s3:// (repeatable)")
    p.add_argument("--output", help="output directory or s3:// location (default: the pipeline's)")
    p.add_argument("--date", help="only this local day: YYYY-MM-DD or yesterday")
    p.add_argument("--key-file", help="master key file (read by the driver only)")
    p.add_argument("--key-dir", help="key ring directory (read by the driver only)")
    p.add_argument("--force", action="store_true", help="let a partial day replace a complete one")
    p.add_argument("--buckets", type=int, help="client buckets: reduce tasks (default: logveil's choice)")
    p.add_argument("--shard-tasks", type=int, help="shard tasks (default: one per input, at most 4 per core)")
    p.add_argument("--logveil", default="logveil", help="the logveil binary, on every executor (default: on the PATH)")
    p.add_argument("--master", help="Spark master (default: spark-submit's, else local[*])")
    p.add_argument(
        "--task-threads",
        type=int,
        default=1,
        help="threads of each shard task (default 1: Spark gives a task one core, spark.task.cpus)",
    )
    return p.parse_args(argv)


class StageFailed(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def run_stage(logveil, args, what):
    """Runs `logveil stage …`; its stderr never holds a raw value (logveil's rule), so it is shown.
    The job exits with logveil's own code when a driver stage fails (decision 17)."""
    done = subprocess.run([logveil, "stage", *args], capture_output=True, text=True)
    if done.returncode != 0:
        code = done.returncode if 0 < done.returncode < 128 else 1
        raise StageFailed(f"logveil stage {what} failed (exit {done.returncode}): {done.stderr.strip()}", code)
    return done.stdout


def private_dir(prefix, in_task=False):
    """A new 0700 directory. In a Spark task it is under the executor's local directories
    (SPARK_LOCAL_DIRS: the application's own, which Spark removes when the application ends,
    even after a task's worker was killed before its own clean-up), never in the executor's
    working directory, which standalone workers keep for days."""
    parent = None
    if in_task:
        local = [d for d in os.environ.get("SPARK_LOCAL_DIRS", "").split(",") if d]
        if not local:
            raise StageFailed("this executor has no SPARK_LOCAL_DIRS for the task's private files")
        parent = local[0]
    return tempfile.mkdtemp(prefix=prefix, dir=parent)


def write_private(path, data):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def executable(path):
    """The binary as given, or a private executable copy (files shipped with --files lose the bit)."""
    if os.path.sep not in path:
        found = shutil.which(path)
        if found is None:
            raise StageFailed(f"no {path!r} on the PATH of this executor; give --logveil PATH")
        return found
    if os.access(path, os.X_OK):
        return path
    copy = os.path.join(private_dir("logveil-bin-", in_task=True), "logveil")
    shutil.copyfile(path, copy)
    os.chmod(copy, stat.S_IRWXU)
    return copy


def pieces(bucket, name, data):
    """A file as rows of (bucket, name, part, payload)."""
    if not data:
        yield (bucket, name, 0, b"")
    for i in range(0, len(data), PIECE):
        yield (bucket, name, i // PIECE, data[i : i + PIECE])


def files_under(root):
    for dirpath, _, names in os.walk(root):
        for n in sorted(names):
            path = os.path.join(dirpath, n)
            yield os.path.relpath(path, root), path


def batch(rows):
    import pyarrow as pa

    rows = list(rows)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r[0] for r in rows], pa.int32()),
            pa.array([r[1] for r in rows], pa.string()),
            pa.array([r[2] for r in rows], pa.int32()),
            pa.array([r[3] for r in rows], pa.binary()),
        ],
        names=["bucket", "name", "part", "payload"],
    )


def write_task_work(work, shipped):
    """The planned run's files a task needs, private to it."""
    for name, data in shipped.items():
        write_private(os.path.join(work, name), data)


def fault(stage, task_id):
    """Tests only: LOGVEIL_SPARK_FAULT=shard:ID kills that task's first attempt half-way
    (shard:ID:always: every attempt, so the stage fails for good)."""
    from pyspark import TaskContext

    wanted = os.environ.get("LOGVEIL_SPARK_FAULT", "")
    ctx = TaskContext.get()
    if wanted == f"{stage}:{task_id}:always":
        return True
    return wanted == f"{stage}:{task_id}" and ctx is not None and ctx.attemptNumber() == 0


def shard_task(shipped_bc, logveil):
    def run(batches):
        logveil_bin = executable(logveil)
        for b in batches:
            for task, inputs in zip(b.column("task").to_pylist(), b.column("inputs").to_pylist()):
                work = private_dir("logveil-shard-", in_task=True)
                try:
                    write_task_work(work, shipped_bc.value)
                    args = ["shard", "--work", work, "--task", f"t{task}", "--inputs", inputs]
                    if fault("shard", task):
                        child = subprocess.Popen([logveil_bin, "stage", *args])
                        time.sleep(0.3)
                        child.kill()
                        child.wait()
                        os._exit(137)  # the task's worker dies, as on a lost executor
                    run_stage(logveil_bin, args, f"shard (task {task})")
                    out = os.path.join(work, "shard", f"t{task}")
                    for rel, path in files_under(out):
                        with open(path, "rb") as f:
                            data = f.read()
                        if rel == "summary.bin":
                            rows = pieces(-1, f"shard/t{task}/summary.bin", data)
                        else:
                            # w-<salt>-b<bucket>.bin: one bucket's sealed events.
                            bucket = int(rel.rsplit("-b", 1)[1].split(".")[0])
                            rows = pieces(bucket, f"shard/t{task}/{rel}", data)
                        for piece in rows:
                            yield batch([piece])
                finally:
                    shutil.rmtree(work, ignore_errors=True)

    return run


def reduce_rows(shipped, logveil, rows):
    """One bucket's rows (its events and context) in, the rows of its reduce output out."""
    logveil_bin = executable(logveil)
    (bucket,) = {r["bucket"] for r in rows}
    work = private_dir("logveil-reduce-", in_task=True)
    try:
        write_task_work(work, shipped)
        assemble(work, rows)
        run_stage(logveil_bin, ["reduce", "--work", work, "--bucket", str(bucket)], f"reduce (bucket {bucket})")
        out_rows = []
        out = os.path.join(work, "reduce", str(bucket))
        for rel, path in files_under(out):
            with open(path, "rb") as f:
                out_rows.extend(pieces(bucket, f"reduce/{bucket}/{rel}", f.read()))
        return out_rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def reduce_task(shipped_bc, logveil):
    """For `applyInArrow` (Spark 4)."""

    def run(table):
        import pyarrow as pa

        return pa.Table.from_batches([batch(reduce_rows(shipped_bc.value, logveil, table.to_pylist()))])

    return run


def reduce_task_pandas(shipped_bc, logveil):
    """For `applyInPandas` (Spark 3.3 to 3.5, which have no `applyInArrow`)."""

    def run(frame):
        import pandas as pd

        rows = reduce_rows(shipped_bc.value, logveil, frame.to_dict("records"))
        return pd.DataFrame(rows, columns=["bucket", "name", "part", "payload"])

    return run


def assemble(work, rows):
    """Writes rows of (bucket, name, part, payload) back into files under `work`, a row at a
    time (rows may come from `toLocalIterator`: the driver never holds them all)."""
    parts = {}
    for r in rows:
        r = r if isinstance(r, dict) else r.asDict()
        name, part = r["name"], r["part"]
        write_private(os.path.join(work, f"{name}.part{part:08d}"), r["payload"])
        parts.setdefault(name, []).append(part)
    for name, numbers in parts.items():
        path = os.path.join(work, name)
        fd = os.open(path + ".whole", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            for n in sorted(numbers):
                piece = f"{path}.part{n:08d}"
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out)
                os.remove(piece)
        os.replace(path + ".whole", path)


class Phases:
    """Each phase's wall time on stderr (names and seconds only)."""

    def __init__(self):
        self.last = time.monotonic()

    def mark(self, name):
        now = time.monotonic()
        print(f"logveil-spark: {name}: {now - self.last:.1f} s", file=sys.stderr)
        self.last = now


def spark_failure(e):
    """One line on why a Spark job failed: logveil's own message when a stage command failed,
    else Spark's reason (a task that failed every attempt)."""
    import re

    text = str(e)
    ours = re.search(r"logveil stage [^\n]*", text)
    if ours:
        return ours.group(0).strip()
    times = re.search(r"Task \S+ in stage \S+ failed \d+ times", text)
    reason = re.search(r"Python worker exited unexpectedly[^\n]*", text) or re.search(
        r"\w+(Exception|Error): (?!Job aborted)[^\n]*", text
    )
    parts = [p.group(0).strip() for p in (times, reason) if p]
    return "; ".join(parts) or type(e).__name__


def spark_session(master):
    from pyspark.sql import SparkSession

    from pyspark import SparkConf

    builder = SparkSession.builder.appName("logveil")
    conf = SparkConf()  # under spark-submit: its settings
    if master:
        builder = builder.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Not under spark-submit (which sets the master): plain `python3`, this machine, with
        # failed tasks retried (plain `local[*]` never retries).
        master = "local[*,4]"
        builder = builder.master(master)
    master = master or conf.get("spark.master", "")
    # On YARN and Kubernetes Spark makes the authentication secret itself; a standalone
    # cluster needs the secret its master and workers were given (pass it with --conf). Only a
    # Spark this job starts itself (local, local-cluster) gets a secret made for this job.
    if master.startswith("local") and not conf.contains("spark.authenticate.secret"):
        builder = builder.config("spark.authenticate.secret", secrets.token_hex(32))
    if os.environ.get("LOGVEIL_SPARK_FAULT"):
        builder = builder.config("spark.executorEnv.LOGVEIL_SPARK_FAULT", os.environ["LOGVEIL_SPARK_FAULT"])
    # Decision 7: authenticated, encrypted traffic and encrypted local disk (shuffle, spills,
    # persisted and broadcast blocks).
    return (
        builder.config("spark.authenticate", "true")
        .config("spark.network.crypto.enabled", "true")
        .config("spark.io.encryption.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )


def main(argv):
    a = parse_args(argv)
    logveil = a.logveil
    parent = private_dir("logveil-work-")
    work = os.path.join(parent, "work")  # made by `stage plan`, inside our private directory
    spark = None
    stage = "plan"
    phases = Phases()
    try:
        plan_args = ["plan", "--work", work, "--threads", str(a.task_threads)]
        for flag, value in [
            ("--pipeline", a.pipeline),
            ("--output", a.output),
            ("--date", a.date),
            ("--key-file", a.key_file),
            ("--key-dir", a.key_dir),
            ("--buckets", a.buckets),
        ]:
            if value is not None:
                plan_args += [flag, str(value)]
        for i in a.input:
            plan_args += ["--input", i]
        if a.force:
            plan_args.append("--force")
        planned = run_stage(logveil, plan_args, "plan")
        info = dict(line.split("=", 1) for line in planned.splitlines() if "=" in line and not line.startswith("input="))
        n_files, buckets = int(info["files"]), int(info["buckets"])

        phases.mark("plan")
        spark = spark_session(a.master)
        sc = spark.sparkContext
        phases.mark("Spark session")
        tasks = a.shard_tasks or min(n_files, 4 * sc.defaultParallelism)
        tasks = max(1, min(tasks, n_files))
        groups = [",".join(str(i) for i in range(t, n_files, tasks)) for t in range(tasks)]

        def shipped(names):
            out = {}
            for n in names:
                with open(os.path.join(work, n), "rb") as f:
                    out[n] = f.read()
            return out

        from pyspark import StorageLevel

        def shard_stage():
            ship = sc.broadcast(shipped(["plan.json", "run.key", "keys.derived"]))
            rdd = sc.parallelize([(t, g) for t, g in enumerate(groups)], len(groups))
            df = spark.createDataFrame(rdd, "task int, inputs string")
            out = df.mapInArrow(shard_task(ship, logveil), SCHEMA).persist(StorageLevel.DISK_ONLY)
            out.count()  # every shard task, in parallel
            # Summaries are small (counts and the clients seen): one job brings them all.
            summaries = out.filter("bucket < 0").collect()
            return out, ship, summaries

        stage = "shard"
        sharded, ship, summaries = shard_stage()
        assemble(work, summaries)
        phases.mark("shard")
        gathered = run_stage(logveil, ["gather", "--work", work], "gather").strip()
        for _ in range(2):
            if gathered != "reshard":
                break
            # The keys grew (days outside the derived ones, or a managed ring's new masters).
            sharded.unpersist()
            ship.unpersist()
            sharded, ship, summaries = shard_stage()
            assemble(work, summaries)
            gathered = run_stage(logveil, ["gather", "--work", work], "gather").strip()
        if gathered == "reshard":
            raise StageFailed("logveil stage gather asked for the shard stage a third time")
        phases.mark("gather")
        if gathered != "days=none":
            context = []
            gather_dir = os.path.join(work, "gather")
            for b in range(buckets):
                with open(os.path.join(gather_dir, f"b{b}.bin"), "rb") as f:
                    context.extend(pieces(b, f"gather/b{b}.bin", f.read()))
            context_df = spark.createDataFrame(context, SCHEMA)
            # Reduce tasks get no key: gather.json gives each day's pseudonym epoch.
            ship_reduce = sc.broadcast(shipped(["plan.json", "run.key", "gather.json"]))
            events = sharded.filter("bucket >= 0")
            # One shuffle partition per bucket (Spark's default is 200, mostly empty).
            spark.conf.set("spark.sql.shuffle.partitions", str(buckets))
            stage = "reduce"
            grouped = events.unionByName(context_df).groupBy("bucket")
            if hasattr(grouped, "applyInArrow") and not os.environ.get("LOGVEIL_SPARK_PANDAS"):
                reduced = grouped.applyInArrow(reduce_task(ship_reduce, logveil), SCHEMA)
            else:
                reduced = grouped.applyInPandas(reduce_task_pandas(ship_reduce, logveil), SCHEMA)
            reduced = reduced.persist(StorageLevel.DISK_ONLY)
            reduced.count()  # every reduce task, in parallel
            # Every bucket has its context row, so every bucket had its reduce task.
            assemble(work, reduced.toLocalIterator(prefetchPartitions=True))
            reduced.unpersist()
            phases.mark("reduce")
        sharded.unpersist()
        summary = run_stage(logveil, ["merge", "--work", work], "merge")
        phases.mark("merge")
        sys.stdout.write(summary)
        return 0
    except StageFailed as e:
        print(f"logveil-spark: {e}; nothing was published", file=sys.stderr)
        return e.code
    except Exception as e:  # a stage that failed for good inside Spark
        print(f"logveil-spark: the {stage} stage failed for good: {spark_failure(e)}; nothing was published", file=sys.stderr)
        return 1
    finally:
        if spark is not None:
            spark.stop()
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
