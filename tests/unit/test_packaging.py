"""docker-compose.yml and the Dockerfile stay runnable: pinned images, real commands."""

from __future__ import annotations

import re
from pathlib import Path

from ruamel.yaml import YAML

from omnijourney.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def test_images_are_pinned_never_latest() -> None:
    compose = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())
    images = [s["image"] for s in compose["services"].values() if "image" in s]
    base = re.findall(r"^FROM (\S+)", (REPO / "Dockerfile").read_text(), re.M)
    for image in images + base:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", image


def test_compose_runs_real_subcommands() -> None:
    compose = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]  # argparse keeps them there
    for name, svc in compose["services"].items():
        if "build" not in svc:
            continue
        argv = svc.get("entrypoint", ["omnijourney"])[1:] + svc.get("command", [])
        assert argv[0] in subcommands, (name, argv)
        assert svc["environment"]["KAFKA_BOOTSTRAP"] == "kafka:19092"
