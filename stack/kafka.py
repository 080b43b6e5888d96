"""The local Kafka (KRaft, single node) from the Maven jars of deploy/kafka/pom.xml.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import structlog

from quantrac.kafka_topics import kafka_admin
from quantrac.settings import REPO_ROOT
from stack.process import ProcessSpec, render, require_binary, run, split_host_port, tcp_connect
from stack.service import PortUse, Service

log = structlog.get_logger(__name__)

KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"


class Kafka(Service):
    """The single-node KRaft broker of the local stack, run with java from the jars of deploy/kafka/pom.xml."""
    name = "kafka"
    exe = "java"

    @property
    def home(self) -> Path:
        """The broker's folder under run_dir: server.properties, log4j config, cluster id and data."""
        return self.run_dir / "kafka"

    @property
    def props(self) -> Path:
        """The rendered server.properties; its path on the command line marks the process as this run_dir's broker."""
        return self.home / "server.properties"

    @property
    def libs(self) -> Path:
        """The broker's jars, copied out of Maven; kept across runs until pom.xml changes."""
        return self.run_dir / "kafka-libs"

    @property
    def bootstrap(self) -> tuple[str, int]:
        """The local broker's listener: the first of settings.kafka_bootstrap."""
        return split_host_port(self.settings.kafka_bootstrap.split(",")[0])

    @property
    def endpoint(self) -> str:
        """`kafka://host:port` of the local listener, as `quantrac stack status` shows it."""
        host, port = self.bootstrap
        return f"kafka://{host}:{port}"

    @property
    def ports(self) -> list[PortUse]:
        """The client listener and the KRaft controller port, each with the setting that moves it."""
        host, port = self.bootstrap
        return [
            PortUse(host, port, f"QUANTRAC_KAFKA_BOOTSTRAP={host}:<port>"),
            PortUse("127.0.0.1", self.settings.kafka_controller_port, "QUANTRAC_KAFKA_CONTROLLER_PORT=<port>"),
        ]

    @property
    def process(self) -> ProcessSpec:
        """Where the broker's pid and logs live, and its server.properties path that identifies its process."""
        return ProcessSpec(
            name=self.name,
            exe=self.exe,
            marker=str(self.props),
            pid_file=self.run_dir / "pids" / "kafka.pid",
            output_log=self.logs_dir / "kafka.out",
            logs=(self.logs_dir / "kafka.out", self.logs_dir / "kafka-server.log"),
        )

    def check(self) -> None:
        """Healthy when the listener accepts TCP and the cluster answers a describe request; raises with the reason otherwise."""
        host, port = self.bootstrap
        tcp_connect(host, port)
        admin = kafka_admin(self.settings)
        try:
            admin.describe_cluster()
        finally:
            admin.close()

    def prepare(self) -> tuple[list[str], Path | None]:
        """Gather the jars, render the configs, format the storage on first run; returns the java argv and the broker's home."""
        java = require_binary("java", "default-jre-headless")
        libs = self._gather_libs()
        classpath = f"{libs}/*"  # java expands the wildcard itself
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        host, port = self.bootstrap
        render(
            "kafka-server.properties",
            self.props,
            run_dir=self.run_dir,
            host=host,
            port=port,
            controller_host="127.0.0.1",
            controller_port=self.settings.kafka_controller_port,
            data_dir=self.home / "data",
            partitions=self.settings.topic_partitions,
        )
        log4j = render(
            "kafka-log4j2.properties", self.home / "log4j2.properties", run_dir=self.run_dir, log_file=self.logs_dir / "kafka-server.log"
        )
        self._format_storage(java, classpath)
        heap = self.settings.kafka_heap
        return [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.props),
        ], self.home

    def _gather_libs(self) -> Path:
        """Copy the broker's jars out of Maven when missing or when pom.xml changed (stamp = its hash)."""
        stamp = self.libs / ".pom-sha256"
        digest = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
        if stamp.is_file() and stamp.read_text().strip() == digest:
            return self.libs
        mvn = require_binary("mvn", "maven")
        log.info("kafka.libs.gathering", pom=str(KAFKA_POM), into=str(self.libs))
        staging = self.libs.with_name("kafka-libs.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        run(
            [mvn, "-B", "-q", "-f", str(KAFKA_POM),
             "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
            "gathering the Kafka jars with Maven",
        )  # fmt: skip
        (staging / ".pom-sha256").write_text(digest + "\n")
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        return self.libs

    def _format_storage(self, java: str, classpath: str) -> None:
        """Format the KRaft metadata log once, with a cluster id generated once and kept in run_dir."""
        if (self.home / "data" / "meta.properties").is_file():
            return
        id_file = self.home / "cluster-id"
        if not id_file.is_file():
            out = run([java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"], "generating a Kafka cluster id")
            id_file.write_text(out.strip().splitlines()[-1].strip() + "\n")
        cluster_id = id_file.read_text().strip()
        run(
            [java, "-cp", classpath, f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
             "kafka.tools.StorageTool", "format", "-g", "-t", cluster_id, "-c", str(self.props)],
            "formatting the Kafka storage",
        )  # fmt: skip
        log.info("kafka.storage.formatted", cluster_id=cluster_id, data_dir=str(self.home / "data"))
