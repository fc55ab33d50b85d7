"""What the real-Kafka runner says when it cannot run (no JVM is started here)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from omnijourney.runtime import kafkadist, kraft
from omnijourney.runtime.broker import choose_broker, start_local_broker


def fake_java(folder: Path, version: str) -> Path:
    """A `java` that answers `-version` as the named release does."""
    bin_dir = folder / "jdk" / "bin"
    bin_dir.mkdir(parents=True)
    java = bin_dir / "java"
    java.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2020-01-01\' >&2\n')
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return java


@pytest.mark.parametrize(("output", "major"), [
    ('openjdk version "17.0.15" 2025-04-15', 17),
    ('openjdk version "25" 2025-09-16', 25),
    ('java version "1.8.0_392"', 8),
    ("no version here", None),
])
def test_java_major_reads_every_version_scheme(output: str, major: int | None) -> None:
    assert kafkadist.java_major(output) == major


def test_the_pinned_version_comes_from_the_pom() -> None:
    version = kafkadist.kafka_version()
    assert version.startswith("4.")
    compose = (Path(__file__).parents[2] / "docker-compose.yml").read_text()
    assert f"apache/kafka:{version}" in compose  # users with Docker run the same release


def test_java_older_than_17_is_one_clear_line_with_the_way_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = fake_java(tmp_path, "11.0.2")
    monkeypatch.setenv("JAVA_HOME", str(java.parent.parent))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(kafkadist.KafkaUnavailable) as err:
        kafkadist.find_java()
    message = str(err.value)
    assert "\n" not in message
    assert "Java 17 or newer" in message and "Java 11" in message
    assert "--broker embedded" in message and "KAFKA_BOOTSTRAP" in message


def test_no_java_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "no java on PATH" in (kafkadist.available() or "")


def test_no_maven_and_no_cached_jars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = fake_java(tmp_path, "17.0.1")
    monkeypatch.setenv("JAVA_HOME", str(java.parent.parent))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("OMNIJOURNEY_KAFKA_CACHE", str(tmp_path / "cache"))
    assert kafkadist.find_java() == str(java)
    with pytest.raises(kafkadist.KafkaUnavailable) as err:
        kafkadist.ensure_jars()
    assert "no Maven (mvn)" in str(err.value) and "--broker embedded" in str(err.value)
    assert "no Maven" in (kafkadist.available() or "")


def test_cached_jars_are_reused_without_maven(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIJOURNEY_KAFKA_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    libs = kafkadist.cache_dir() / "libs"
    libs.mkdir(parents=True)
    (libs / ".complete").write_text(kafkadist.kafka_version())
    assert kafkadist.ensure_jars() == libs


def test_a_half_fetched_cache_is_not_taken_for_a_whole_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIJOURNEY_KAFKA_CACHE", str(tmp_path))
    (kafkadist.cache_dir() / "libs").mkdir(parents=True)  # no .complete: a fetch was cut short
    assert not kafkadist.jars_present()


def test_auto_falls_back_to_the_embedded_broker_without_java(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    kind, why = choose_broker("auto")
    assert kind == "embedded" and "Java 17" in (why or "")
    assert choose_broker("embedded") == ("embedded", None)


def test_auto_takes_real_kafka_where_java_and_jars_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = fake_java(tmp_path, "17.0.1")
    monkeypatch.setenv("JAVA_HOME", str(java.parent.parent))
    monkeypatch.setenv("OMNIJOURNEY_KAFKA_CACHE", str(tmp_path / "cache"))
    libs = kafkadist.cache_dir() / "libs"
    libs.mkdir(parents=True)
    (libs / ".complete").write_text("x")
    assert choose_broker("auto") == ("kafka", None)


def test_kafka_without_java_is_refused_not_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(kafkadist.KafkaUnavailable):
        start_local_broker("kafka", directory=tmp_path / "k")


def test_cluster_ids_are_what_kraft_storage_takes() -> None:
    cid = kraft.cluster_id()
    assert len(cid) == 22 and "=" not in cid
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    assert cid != kraft.cluster_id()


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    """kafka-storage read a leading ``-`` as an option and refused to format (a CI run
    failed on it, one start in 64): such a draw is drawn again."""
    draws = iter([bytes([0xF8]) + bytes(15), bytes(16)])  # base64 "-A..." then "AAA..."
    cid = kraft.cluster_id(lambda: next(draws))
    assert cid == "A" * 22
    assert not any(kraft.cluster_id().startswith("-") for _ in range(2000))
