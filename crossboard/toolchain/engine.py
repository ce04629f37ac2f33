"""The Docker engine, reached through the docker SDK: DOCKER_HOST, else the current Docker context."""

from __future__ import annotations

import os

import docker
from docker.context import ContextAPI
from docker.errors import DockerException

from ..errors import InfrastructureError

LOCAL_SCHEMES = ("unix://", "npipe://")  # an engine whose bind mounts see this machine's folders


def engine_if_running() -> docker.DockerClient | None:
    try:
        return docker_client()
    except InfrastructureError:
        return None


def engine_url() -> str:
    """Where the engine is, as the docker CLI would choose: DOCKER_HOST, else DOCKER_CONTEXT's or the
    current context's endpoint (`docker context use builder`), else the local socket."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    try:
        context = ContextAPI.get_context(os.environ.get("DOCKER_CONTEXT"))
    except DockerException as error:
        raise InfrastructureError(f"cannot read the Docker context ({error}): check `docker context ls`") from None
    if context is None:
        raise InfrastructureError(f"no Docker context named {os.environ.get('DOCKER_CONTEXT')!r}: see `docker context ls`")
    return context.Host or "unix:///var/run/docker.sock"


def is_local(url: str) -> bool:
    return url.startswith(LOCAL_SCHEMES)


def docker_client() -> docker.DockerClient:
    url = engine_url()
    try:
        if os.environ.get("DOCKER_HOST"):
            client = docker.from_env()  # also DOCKER_TLS_VERIFY and DOCKER_CERT_PATH
        else:
            context = ContextAPI.get_context(os.environ.get("DOCKER_CONTEXT"))
            client = docker.DockerClient(base_url=url, tls=(context.TLSConfig if context else None) or False)
        client.ping()
    except DockerException as error:
        where = "" if is_local(url) else f" at {url}"
        raise InfrastructureError(
            f"cannot reach the Docker engine{where} ({error}): start it (systemctl start docker) or point DOCKER_HOST at it"
        ) from None
    return client
