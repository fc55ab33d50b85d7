"""For operators: ``lag``, ``topics``, ``schemas check``, ``kafka up``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from omnijourney import wallclock
from omnijourney.cli.common import (
    settings_from,
)
from omnijourney.settings import Settings

EXIT_OVER = 1  # a threshold was crossed
EXIT_ERROR = 2  # could not measure


def cmd_lag(args: argparse.Namespace) -> int:
    from omnijourney.ops.lag import LagReader, known_groups, over, render

    settings = Settings.from_env(bootstrap=args.bootstrap)
    groups = known_groups(settings)
    if args.group:
        unknown = [g for g in args.group if g not in groups and not args.topic]
        if unknown:
            print(f"omnijourney lag: {', '.join(unknown)} is not one of ours "
                  f"({', '.join(groups)}); name its topics with --topic", file=sys.stderr)
            return EXIT_ERROR
        groups = {g: args.topic or groups[g] for g in args.group}
    tty = sys.stdout.isatty() and not args.json

    def paint(text: str, bad: bool) -> str:
        return f"\033[33m{text}\033[0m" if bad and tty else text

    try:
        reader = LagReader(settings)
    except Exception as exc:  # kafka-python raises NoBrokersAvailable and friends
        print(f"omnijourney lag: cannot reach Kafka at {settings.bootstrap}: {exc}",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        while True:
            rows = reader.measure(groups, wallclock.now())
            bad = over(rows, max_lag=args.max_lag, max_time_lag=args.max_time_lag)
            if args.json:
                print(json.dumps({"at": wallclock.now().isoformat(),
                                  "partitions": [r.to_dict() for r in rows],
                                  "over_threshold": len(bad)}), flush=True)
            else:
                if args.watch and tty:
                    print("\033[H\033[2J", end="")
                print(render(rows, paint), flush=True)
                if bad:
                    print(f"{len(bad)} partition(s) over the threshold", file=sys.stderr)
            if not args.watch:
                return EXIT_OVER if bad else 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        reader.close()


def cmd_topics(args: argparse.Namespace) -> int:
    from omnijourney.runtime.topics import ensure_topics

    for name, parts in sorted(ensure_topics(settings_from(args)).items()):
        print(f"{name}\t{parts} partition(s)")
    return 0


def cmd_schemas_check(args: argparse.Namespace) -> int:
    from omnijourney.schemacheck import check_dir

    findings, compared = check_dir(Path(args.dir), against=args.against)
    for f in findings:
        print(f"{args.dir}/{f.file}: incompatible ({f.direction}) {f.problem}")
    print(f"{compared} schema(s) compared with {args.against}: "
          + ("compatible" if not findings else f"{len(findings)} breaking change(s)"),
          file=sys.stderr)
    return 1 if findings else 0


def cmd_kafka_up(args: argparse.Namespace) -> int:
    """Real Apache Kafka on this machine until interrupted; prints the bootstrap."""
    from omnijourney.runtime.kafkadist import KafkaUnavailable
    from omnijourney.runtime.kraft import KafkaCluster

    stop = threading.Event()
    cluster = KafkaCluster(args.nodes, Path(args.dir) if args.dir else None)
    print(f"starting Apache Kafka {cluster.version} ({args.nodes} KRaft node(s)) ...",
          file=sys.stderr)
    try:
        with cluster:  # Ctrl-C while it starts: every node stopped on the way out
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            print(cluster.bootstrap, flush=True)
            print(f"KAFKA_BOOTSTRAP={cluster.bootstrap}; logs in "
                  f"{cluster.root}/node-*/server.log; Ctrl-C stops every node", file=sys.stderr)
            while not stop.wait(1.0):
                dead = [n for n in cluster.members if not n.running]
                if dead:
                    print(f"omnijourney kafka up: node {dead[0].node_id} exited; the end of "
                          f"its log:\n{dead[0].log_tail()}", file=sys.stderr)
                    return 1
    except KafkaUnavailable as exc:
        print(f"omnijourney kafka up: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def add_parsers(sub: Any) -> None:
    lag = sub.add_parser("lag", help="consumer lag per group, topic and partition")
    lag.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP)")
    lag.add_argument("--group", action="append",
                     help="only this group (repeatable; default: the engine and every adapter)")
    lag.add_argument("--topic", action="append", help="topics of a --group that is not ours")
    lag.add_argument("--json", action="store_true", help="one JSON document per measurement")
    lag.add_argument("--watch", type=float, nargs="?", const=5.0,
                     help="measure again every N seconds (default 5)")
    lag.add_argument("--max-lag", type=int, help="exit 1 when a partition lags more records")
    lag.add_argument("--max-time-lag", type=float,
                     help="exit 1 when a partition's oldest waiting record is older (seconds)")
    lag.set_defaults(func=cmd_lag)

    k = sub.add_parser("kafka", help="run real Apache Kafka on this machine (KRaft)")
    ks = k.add_subparsers(dest="kafka_command", required=True)
    up = ks.add_parser("up", help="start a KRaft cluster, print its bootstrap, run until "
                                  "interrupted")
    up.add_argument("--nodes", type=int, choices=[1, 3], default=1)
    up.add_argument("--dir", help="keep the nodes' data and logs here (default: a temporary "
                                  "directory, removed at the end)")
    up.set_defaults(func=cmd_kafka_up)

    tp = sub.add_parser("topics", help="create omnijourney's topics (idempotent)")
    tp.add_argument("--bootstrap")
    tp.set_defaults(func=cmd_topics)

    sc = sub.add_parser("schemas", help="schema tools")
    scs = sc.add_subparsers(dest="schemas_command", required=True)
    chk = scs.add_parser("check", help="refuse schema changes that break old readers/writers")
    chk.add_argument("--dir", default="schemas")
    chk.add_argument("--against", default="HEAD", help="a git revision or a directory")
    chk.set_defaults(func=cmd_schemas_check)
