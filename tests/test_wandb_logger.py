"""The per-run W&B logger follows W&B's conventions: explicit settings, else W&B's environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustdiag.records.wandb_logger import WandbLogger


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in (
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        "WANDB_NAME",
        "WANDB_RUN_GROUP",
        "WANDB_JOB_TYPE",
        "WANDB_TAGS",
    ):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_environment_variables_fill_unset_settings(clean_env: pytest.MonkeyPatch) -> None:
    assert WandbLogger(mode="disabled").project == "robustdiag"
    clean_env.setenv("WANDB_PROJECT", "from-env")
    clean_env.setenv("WANDB_TAGS", "a, b,,c")
    clean_env.setenv("WANDB_RUN_GROUP", "grp")
    clean_env.setenv("WANDB_JOB_TYPE", "jt")
    logger = WandbLogger(mode="disabled")
    assert (logger.project, logger.tags, logger.group, logger.job_type) == (
        "from-env",
        ["a", "b", "c"],
        "grp",
        "jt",
    )
    explicit = WandbLogger(project="mine", tags=["x"], group="g", job_type="j", mode="disabled")
    assert (explicit.project, explicit.tags, explicit.group, explicit.job_type) == ("mine", ["x"], "g", "j")


def test_bad_logger_settings_are_refused(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"logger.tags='a,b' must be a list, e.g. logger.tags=\[a,b\]"):
        WandbLogger(tags="a,b", mode="disabled")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="logger.console='loud' is not valid"):
        WandbLogger(console="loud", mode="disabled")
    with pytest.raises(ValueError, match="logger.mode='sometimes' is not a W&B mode"):
        WandbLogger(mode="sometimes")


def test_an_offline_run_streams_epochs_and_logs_the_record(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    from wandb_offline import find_offline_runs, read_offline_run

    (tmp_path / "metrics.json").write_text('{"status": "complete"}')
    logger = WandbLogger(mode="offline", console="off")
    logger.start(
        config={"seed": 0}, name="n", group="g", directory=tmp_path, job_type="memorise", run_id="abc123"
    )
    for epoch in (1, 2, 3):
        logger.log_metrics({"train/loss": 1.0 / epoch}, step=epoch)
    logger.log_record("cfghash", [tmp_path / "metrics.json"], checkpoint=None)
    logger.finish(failed=False)
    (run,) = [read_offline_run(p) for p in find_offline_runs(tmp_path)]
    assert run.run["job_type"] == "memorise" and run.run["run_id"] == "abc123" and run.run["group"] == "g"
    assert [row["train/loss"] for row in run.history if "train/loss" in row] == pytest.approx(
        [1.0, 0.5, 1 / 3]
    )
    assert "run-record:record-cfghash" in run.artifacts and "metrics.json" in run.artifacts


def test_an_online_start_that_fails_goes_on_offline_and_says_so_once(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    import wandb

    modes: list[str] = []
    real_init = wandb.init

    def init(*args, **kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.AuthenticationError("API key is invalid")
        return real_init(*args, **kwargs)

    clean_env.setattr(wandb, "init", init)
    logger = WandbLogger(mode="online", console="off")
    with pytest.warns(UserWarning, match="W&B online start failed .* logging offline") as caught:
        logger.start(config={}, name="n", group="g", directory=tmp_path, job_type="j", run_id="r1")
    assert modes == ["online", "offline"] and logger.run is not None and len(caught) == 1
    logger.finish(failed=False)


def test_an_unwritable_wandb_directory_warns_and_the_run_goes_on(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    logger = WandbLogger(mode="offline", console="off")
    with pytest.warns(UserWarning, match="W&B start failed .* the local record is unaffected"):
        logger.start(config={}, name="n", group="g", directory=blocker / "sub", job_type="j", run_id="r2")
    assert logger.run is None
    logger.log_metrics({"x": 1.0}, step=1)  # no-ops, no errors
    logger.finish(failed=False)


def test_a_relaunched_job_continues_its_wandb_run(tmp_path: Path) -> None:
    from robustdiag.run import wandb_run_id

    job = tmp_path / "sweep" / "3"
    assert wandb_run_id(job, "cfg") == wandb_run_id(
        tmp_path / "sweep" / "." / "3", "cfg"
    )  # same job: same run
    assert (
        wandb_run_id(job, "cfg")
        != wandb_run_id(job, "other")
        != wandb_run_id(tmp_path / "sweep" / "4", "cfg")
    )
