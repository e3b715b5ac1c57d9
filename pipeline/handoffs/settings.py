"""How settings flow between the steps: a later step takes the settings of the hand-offs it reads as its
defaults, where the step that made them was given them as flags (their provenance says which:
:func:`pipeline.handoffs.provenance.flags`). A setting an earlier step took from the TOML is checked against the
TOML as it is now, as before (a changed TOML asks for that step to be rerun); a flag given to a later step that
differs from what its hand-off was made with is a one-line error saying which step ran with what, and what to do.

Step 1 reads Step 0's settings from ``samples_labels.mat``; Step 2 those and the balanced set's, of the balanced set
``--per-class`` names, else of the one Step 1 made last; Step 3 Step 0's, and the balanced set's Step 2 trained on.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.core.errors import InputDataError
from pipeline.handoffs import contract, matfile
from pipeline.handoffs.provenance import BALANCE_PARAMETERS, STEP0_PARAMETERS
from pipeline.run.cli import flag_of
from pipeline.run.config import Scene


def adopted(scene: Scene, record: dict, names, path: Path) -> Scene:
    """``scene`` with the values the hand-off at ``path`` (its provenance ``record``) was made with for those of
    the parameters ``names`` its step was given as flags; a flag given here with another value than the
    hand-off's is a one-line :class:`InputDataError` naming the step that made it, its value and the two ways out."""
    made_by, recorded = record["step"], record["parameters"]
    for name in names:
        given = getattr(scene.params, name)
        if name in scene.given_flags and name in recorded and plain(given) != recorded[name]:
            raise InputDataError(f"{path}: {made_by} ran with {name} {value_text(recorded[name])}; drop "
                                 f"{flag_of(name)} here, or rerun {made_by} with {flag_text(name, given)}")
    carried = {name: recorded[name] for name in names
               if name in record.get("flags", ()) and name not in scene.given_flags and name in recorded}
    return dataclasses.replace(scene, params=scene.params.replaced(carried, str(path)),
                               carried_flags=scene.carried_flags | frozenset(carried))


def plain(value):
    """A parameter's value as its provenance records it (a tuple as a list)."""
    return list(value) if isinstance(value, tuple) else value


def value_text(value) -> str:
    """A recorded value as a sentence shows it.

    >>> value_text(["red", "green", "blue"]), value_text(60000)
    ('red green blue', '60000')
    """
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def flag_text(name: str, value) -> str:
    """The flag that gives parameter ``name`` the ``value``.

    >>> flag_text("n_segments", 20000), flag_text("masking", False), flag_text("slic_layers", ("nir", "red", "green"))
    ('--n-segments 20000', '--no-masking', '--slic-layers nir red green')
    """
    if isinstance(value, bool):
        return flag_of(name) if value else flag_of(name).replace("--", "--no-", 1)
    return f"{flag_of(name)} {value_text(plain(value))}"


def provenance_at(handoff: contract.HandOff, path: Path) -> dict:
    """The provenance of the hand-off ``handoff`` at ``path``, read alone."""
    contents = matfile.load_mat(path, [contract.PROVENANCE], made_by=handoff.made_by)
    return contract.provenance_of(contents, path, handoff.made_by)


def with_step0_settings(scene: Scene) -> Scene:
    """``scene`` with the settings of Step 0's hand-offs (``samples_labels.mat``) as defaults."""
    path = contract.SAMPLES.path(scene.workdir)
    return adopted(scene, provenance_at(contract.SAMPLES, path), STEP0_PARAMETERS, path)


def balanced_set(scene: Scene) -> Path | None:
    """The balanced set Step 2 trains on: the one of ``--per-class``, if given and there, else the one Step 1
    made last (by the time in its provenance); None if there is none."""
    named = contract.BALANCED.path(scene.workdir, per_class=scene.params.per_class)
    if "per_class" in scene.given_flags and named.is_file():
        return named
    made = {path: provenance_at(contract.BALANCED, path).get("made", 0.0)
            for path in scene.workdir.glob(contract.BALANCED.filename.format(per_class="*"))
            if path.stem.rpartition("_")[2].isdigit()}
    return max(made, key=made.get, default=None)


def for_training(scene: Scene) -> tuple[Scene, Path | None]:
    """Step 2's scene, with the settings of Step 0's hand-offs and of the balanced set it trains on
    (:func:`balanced_set`), and that set's path (None if Step 1 made none)."""
    scene = with_step0_settings(scene)
    path = balanced_set(scene)
    if path is None:
        return scene, None
    return adopted(scene, provenance_at(contract.BALANCED, path), BALANCE_PARAMETERS, path), path


def for_assessment(scene: Scene) -> Scene:
    """Step 3's scene, with the settings of Step 0's hand-offs and, for a map of a model trained here, those of
    the balanced set Step 2 trained on (as ``predLabels.mat`` records them)."""
    scene = with_step0_settings(scene)
    path = contract.PRED_LABELS.path(scene.workdir)
    record = provenance_at(contract.PRED_LABELS, path)
    if record.get("step1_run") is None:  # an applied model: no balanced set of this scene
        return scene
    return adopted(scene, record, BALANCE_PARAMETERS, path)
