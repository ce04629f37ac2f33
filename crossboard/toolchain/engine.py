"""The Docker engine, reached through the docker SDK."""

from __future__ import annotations

import docker
from docker.errors import DockerException

from ..errors import InfrastructureError


def engine_if_running() -> docker.DockerClient | None:
    try:
        return docker_client()
    except InfrastructureError:
        return None


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as error:
        raise InfrastructureError(
            f"cannot reach the Docker engine ({error}): start it (systemctl start docker) or point DOCKER_HOST at it"
        ) from None
    return client
