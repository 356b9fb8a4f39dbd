import posemum_deploy


def test_every_public_name_resolves():
    for name in posemum_deploy.__all__:
        assert getattr(posemum_deploy, name) is not None


def test_cli_lists_every_command():
    from typer.testing import CliRunner

    from posemum_deploy.cli.app import app

    out = CliRunner().invoke(app, ["--help"]).output
    for command in ("synth", "train", "presets", "evaluate", "demo", "export", "doctor", "label",
                    "merge", "visualize", "rounds"):
        assert command in out
