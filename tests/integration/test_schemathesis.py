"""schemathesis over every operation of /openapi.json on a real server with the demo models: no 5xx, and every
status, content type and body it answers is documented (bounded: a few examples per operation, a deadline each)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Lax input handling is deliberate and not checked here (negative_data_rejection, positive_data_acceptance): a null
# means "unset", a single stop string stands for a list of one, and fields this server does not implement are
# refused by name with a 400 although the schema (the dialect's wire format) allows them.


@pytest.fixture(scope="module")
def fuzzed_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # A copy: /api/delete, /api/copy and /api/create edit the models.yaml they are served from.
    folder = tmp_path_factory.mktemp("schemathesis") / "models"
    shutil.copytree(demo_dir, folder)
    server = start_server(folder.parent, folder / "models.yaml")
    yield server
    server.stop()


def test_every_operation_conforms(fuzzed_server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.base_url}/openapi.json")
    # The dashboard's event stream never ends by design; the web page's HTML is not an API.
    schema = schema.exclude(path_regex=r"^/v1/dashboard/stream$|^/ui")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # Driven with hypothesis directly: schemathesis' pytest plugin does not run under pytest 9 yet.
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
            )
            def conforms(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=fuzzed_server.base_url, checks=CHECKS, timeout=30)

            try:
                conforms()
            except Unsatisfiable:
                continue  # nothing in this operation can be made invalid (no parameters, or only a free string)
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations >= 30
    assert not failures, "\n\n".join(failures)
