"""Capacity guard: the most app processes the shipped fleets can ever run, each with its full pool,
never need more Postgres connections than the server allows (minus its reserve).

Per worker process: pool_size + max_overflow for each database, plus one dedicated connection
for the Postgres change feed listener (counted even while the feed is off, so turning it on
never breaks the budget). Kubernetes: HPA maxReplicas plus the rolling update's maxSurge.
Compose: the x-capacity.max_app_replicas the file declares. deploy/README.md shows the same
arithmetic; this test recomputes it from the files and checks the README's table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from .artefacts import SAMPLE_SECRETS, compose_app_environment, k8s_object, load_compose
from .harness import DEPLOY

CHANGE_FEED_CONNECTIONS_PER_WORKER = 1


@dataclass(frozen=True)
class Budget:
    fleet: str
    replicas: int
    workers: int
    pool_size: int
    max_overflow: int
    max_connections: int
    reserved: int

    @property
    def per_worker(self) -> int:
        return self.pool_size + self.max_overflow + CHANGE_FEED_CONNECTIONS_PER_WORKER

    @property
    def needed(self) -> int:
        return self.replicas * self.workers * self.per_worker

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved

    def readme_row(self) -> str:
        """The row of deploy/README.md's capacity table for this fleet."""
        return (f"| {self.fleet} | {self.replicas} × {self.workers} | "
                f"{self.pool_size} + {self.max_overflow} + {CHANGE_FEED_CONNECTIONS_PER_WORKER} = {self.per_worker} | "
                f"{self.needed} | {self.max_connections} − {self.reserved} = {self.available} |")


def _databases(environment: dict[str, str]) -> set[str]:
    return {match.group(1).lower() for name in environment
            if (match := re.match(r"SCALEKIT_POOL_DATABASES_([A-Z0-9_]+?)_(?:URL|POOL_SIZE|MAX_OVERFLOW)$", name))}


def compose_budget() -> Budget:
    compose = load_compose()
    environment = compose_app_environment(SAMPLE_SECRETS)
    assert _databases(environment) == {"default"}, "one database: the budget below counts one pool"
    postgres = compose["services"]["postgres"]["command"]
    settings = dict(arg.split("=", 1) for arg in postgres if "=" in arg)
    capacity = compose["x-capacity"]
    assert capacity["max_app_replicas"] >= compose["services"]["app"]["deploy"]["replicas"] + 1, \
        "room for at least the shipped replicas plus one start-first update"
    return Budget("compose (x-capacity.max_app_replicas)", capacity["max_app_replicas"],
                  int(environment["WEB_CONCURRENCY"]),
                  int(environment["SCALEKIT_POOL_DATABASES_DEFAULT_POOL_SIZE"]),
                  int(environment["SCALEKIT_POOL_DATABASES_DEFAULT_MAX_OVERFLOW"]),
                  int(settings["max_connections"]), capacity["reserved_connections"])


def kubernetes_budget() -> Budget:
    config_map = k8s_object("ConfigMap", "scalekit-config")
    data, annotations = config_map["data"], config_map["metadata"]["annotations"]
    assert _databases(data) | {"default"} == {"default"}
    hpa = k8s_object("HorizontalPodAutoscaler", "scalekit-shop")["spec"]
    surge = k8s_object("Deployment", "scalekit-shop")["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert isinstance(surge, int), "an absolute maxSurge keeps the budget exact"
    return Budget("Kubernetes (HPA maxReplicas + maxSurge)", hpa["maxReplicas"] + surge,
                  int(data["WEB_CONCURRENCY"]),
                  int(data["SCALEKIT_POOL_DATABASES_DEFAULT_POOL_SIZE"]),
                  int(data["SCALEKIT_POOL_DATABASES_DEFAULT_MAX_OVERFLOW"]),
                  int(annotations["scalekit.dev/postgres-max-connections"]),
                  int(annotations["scalekit.dev/postgres-reserved-connections"]))


@pytest.mark.parametrize("budget", [compose_budget(), kubernetes_budget()], ids=lambda b: b.fleet.split()[0])
def test_fleet_at_its_largest_fits_in_postgres(budget: Budget) -> None:
    assert budget.needed <= budget.available, (
        f"{budget.fleet}: {budget.replicas} replicas x {budget.workers} workers x {budget.per_worker} "
        f"connections = {budget.needed} > {budget.available} available")


@pytest.mark.parametrize("budget", [compose_budget(), kubernetes_budget()], ids=lambda b: b.fleet.split()[0])
def test_readme_shows_the_same_arithmetic(budget: Budget) -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert budget.readme_row() in readme, f"deploy/README.md should contain:\n{budget.readme_row()}"


def test_one_more_hpa_replica_than_the_budget_allows_would_be_caught() -> None:
    budget = kubernetes_budget()
    spare = budget.available - budget.needed
    too_many = budget.replicas + spare // (budget.workers * budget.per_worker) + 1
    over = Budget(budget.fleet, too_many, budget.workers, budget.pool_size, budget.max_overflow,
                  budget.max_connections, budget.reserved)
    assert over.needed > over.available
