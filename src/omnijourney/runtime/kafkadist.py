"""The pinned Apache Kafka release and what it needs to run here: Java 17 or newer, and
its jars, fetched once by Maven from Maven Central (``kafka-pom.xml`` pins the version)
into ``~/.cache/omnijourney/kafka-<version>/`` or ``$OMNIJOURNEY_KAFKA_CACHE``."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from importlib.resources import files
from pathlib import Path

MIN_JAVA = 17
POM = Path(str(files("omnijourney.runtime").joinpath("kafka-pom.xml")))
_MAVEN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
WAY_OUT = "use `--broker embedded`, or point KAFKA_BOOTSTRAP at a running cluster"


class KafkaUnavailable(RuntimeError):
    """Real Kafka cannot run here; the message names what is missing and the way out."""


def kafka_version(pom: Path = POM) -> str:
    """The pinned Apache Kafka release (the POM's ``kafka.version``)."""
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", _MAVEN_NS)
    if node is None or not (node.text or "").strip():
        raise KafkaUnavailable(f"{pom} names no kafka.version")
    return (node.text or "").strip()


# ----------------------------------------------------------------------- java and jars

def java_major(version_output: str) -> int | None:
    """The major version in ``java -version``'s output (``1.8.0_392`` -> 8, ``17.0.15`` -> 17)."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """A ``java`` of at least version 17: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidates = [str(Path(home) / "bin" / "java")] if home else []
    candidates += [p for p in [shutil.which("java")] if p]
    seen: list[str] = []
    for java in candidates:
        try:
            out = subprocess.run([java, "-version"], capture_output=True, text=True,
                                 timeout=30, check=False)
        except OSError:
            continue
        major = java_major(out.stderr + out.stdout)
        if major is not None and major >= MIN_JAVA:
            return java
        seen.append(f"{java} is Java {major or '?'}")
    found = "; ".join(seen) if seen else "no java on PATH and no JAVA_HOME"
    raise KafkaUnavailable(f"real Kafka needs Java {MIN_JAVA} or newer ({found}): {WAY_OUT}")


def cache_dir(version: str | None = None) -> Path:
    base = os.environ.get("OMNIJOURNEY_KAFKA_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "omnijourney"
    return root / f"kafka-{version or kafka_version()}"


def jars_present(version: str | None = None) -> bool:
    return (cache_dir(version) / "libs" / ".complete").is_file()


def ensure_jars(version: str | None = None, *, quiet: bool = False) -> Path:
    """The directory of the pinned release's jars, fetched by Maven the first time.

    Several processes may ask at once (a test run, a demo): one fetches, under a file lock,
    into a scratch directory that is renamed into place only when complete."""
    version = version or kafka_version()
    home = cache_dir(version)
    libs = home / "libs"
    if jars_present(version):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable(f"real Kafka {version} needs its jars in {libs}, and there is "
                               f"no Maven (mvn) to fetch them: install Maven, or {WAY_OUT}")
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jars_present(version):
            return libs
        if not quiet:
            print(f"fetching Apache Kafka {version} from Maven Central into {libs} "
                  "(once) ...", file=sys.stderr)
        scratch = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
        cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
               f"-DoutputDirectory={scratch}", f"-Dkafka.version={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0 or not any(scratch.glob("kafka_2.13-*.jar")):
            shutil.rmtree(scratch, ignore_errors=True)
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise KafkaUnavailable(f"Maven could not fetch Apache Kafka {version} "
                                   f"(exit {done.returncode}); {WAY_OUT}\n{tail}")
        (scratch / ".complete").write_text(version)
        shutil.rmtree(libs, ignore_errors=True)
        scratch.rename(libs)
    return libs


def available() -> str | None:
    """Why real Kafka cannot run here, or None when it can (Java 17+, jars or Maven)."""
    try:
        find_java()
        if not jars_present() and shutil.which("mvn") is None:
            raise KafkaUnavailable(f"no cached Kafka jars and no Maven to fetch them: {WAY_OUT}")
    except KafkaUnavailable as exc:
        return str(exc)
    return None


