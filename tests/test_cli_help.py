"""Every subcommand's --help: built from the registries, so that it names every modality's
datasets and defaults, and never shows a default as None."""

from __future__ import annotations

import pytest

from ardm.cli import COMMANDS, build_parser, main
from ardm.modalities import MODALITIES


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # one line per option: no word broken at a hyphen


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_train_help_names_every_modalitys_datasets_and_defaults(capsys):
    text = _help(capsys, "train")
    assert ("audio: 'asterisk' (Debian package asterisk-core-sounds-en-wav) or a directory of "
            "16-bit mono PCM WAV files") in text
    for modality in MODALITIES.values():
        assert " ".join(modality.dataset_help.split()) in text
        for default in (modality.default_dataset, modality.default_net, modality.default_model,
                        str(modality.default_branch_factor)):
            assert f"{modality.name}: {default}" in text, (modality.name, default)


def test_no_help_shows_a_default_of_none(capsys):
    names = list(next(a.choices for a in build_parser()._actions if a.dest == "command"))
    assert len(names) == len(COMMANDS)
    for name in names:
        assert "default: None" not in _help(capsys, name), name
