"""Stop 58's hunt in `tokenpool serve` and the command line: the options check's cost, the names messages give,
the model cards, JSON numbers, --max-chunks on SentencePiece tokenizers. Servers bind 127.0.0.1 on free ports
and are stopped here."""

from __future__ import annotations

import pytest
from serve_fakes import FakeRunner

from tokenpool.model import request as request_module
from tokenpool.serve import service
from tokenpool.serve.fields import OPENAI, EmbedRequest
from tokenpool.serve.http import ApiError
from tokenpool.serve.metrics import Metrics
from tokenpool.serve.settings import ServeSettings


def _counted(monkeypatch) -> list[dict]:
    """Every `EncodeRequest.check_encoder` call the service makes, as the request's options."""
    checks: list[dict] = []
    check = request_module.EncodeRequest.check_encoder

    def counted(self, encoder):
        checks.append({"truncate_dim": self.truncate_dim, "prompt_name": self.prompt_name})
        return check(self, encoder)

    monkeypatch.setattr(request_module.EncodeRequest, "check_encoder", counted)
    return checks


def test_accepted_options_are_checked_once_on_a_cache_miss(monkeypatch):
    """The options check built up to four `EncodeRequest`s, field by field, on every cache miss; accepted
    options need one whole check, and a repeat none."""
    built = _counted(monkeypatch)
    model = service.Model(FakeRunner(), ("fake",), ServeSettings(), Metrics())
    req = EmbedRequest(protocol=OPENAI, texts=["a b"], dimensions=4, normalize=True, prompt_name="query")
    checked = model._options(req)
    assert (checked.truncate_dim, checked.normalize, checked.prompt_name) == (4, True, "query")
    assert len(built) == 1 and built[0]["truncate_dim"] == 4 and built[0]["prompt_name"] == "query"
    model._options(req)
    assert len(built) == 1


@pytest.mark.parametrize(("fields", "param", "needle"), [
    ({"dimensions": 99}, "dimensions", "'dimensions'"),
    ({"prompt_name": "nope"}, "prompt_name", "nope"),
    ({"precision": "int8"}, "precision", "calibration"),
])  # fmt: skip
def test_refused_options_still_name_the_field(fields, param, needle):
    """A refusal names the field that made it, as the field-by-field check named it."""
    model = service.Model(FakeRunner(), ("fake",), ServeSettings(), Metrics())
    with pytest.raises(ApiError) as caught:
        model._options(EmbedRequest(protocol=OPENAI, texts=["a"], **fields))
    assert caught.value.param == param and needle in caught.value.message, caught.value.message
