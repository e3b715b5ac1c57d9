"""A hand-off's provenance is checked where it is parsed: Step 0's record without a whole inputs record (each
key of it removed or altered in turn), or without its run or parameters, is one line naming the file, never a
KeyError later."""
from __future__ import annotations

import copy
import json

import pytest

from pipeline.core.errors import InputDataError
from pipeline.core.vocabulary import STEP0
from pipeline.handoffs import contract


@pytest.fixture(scope="module")
def record(step0_workdir) -> dict:
    """The provenance record of the subset's Step 0 run, as parsed from segments.mat."""
    contents = contract.load(contract.SEGMENTS, step0_workdir, [contract.PROVENANCE])
    return contract.provenance_of(contents, contract.SEGMENTS.path(step0_workdir), STEP0)


def edits(record: dict) -> list:
    """(description, edited record) for every key of the inputs record removed or made the wrong type, and the
    record's run, inputs and parameters removed."""
    cases = []
    for key in ("run", "inputs", "parameters"):
        cases.append((f"no {key}", {k: v for k, v in record.items() if k != key}))
    for role in ("image", "reference"):
        edited = copy.deepcopy(record)
        del edited["inputs"][role]
        cases.append((f"no inputs.{role}", edited))
        for key in ("path", "sha256"):
            for value in (None, 7):
                edited = copy.deepcopy(record)
                if edited["inputs"][role] is None:
                    continue
                edited["inputs"][role][key] = value
                cases.append((f"inputs.{role}.{key} = {value}", edited))
    cases += [("inputs a list", {**record, "inputs": []}), ("parameters a text", {**record, "parameters": "x"}),
              ("a list", [record])]
    return cases


def test_a_step0_record_without_its_inputs_or_run_is_one_line(record, tmp_path):
    path = tmp_path / "segments.mat"
    assert contract.provenance_of({contract.PROVENANCE: [json.dumps(record)]}, path, STEP0) == record
    for description, edited in edits(record):
        with pytest.raises(InputDataError) as raised:
            contract.provenance_of({contract.PROVENANCE: [json.dumps(edited)]}, path, STEP0)
        message = str(raised.value)
        assert message.startswith(f"{path}: ") and "\n" not in message and "rerun Step0" in message, description
