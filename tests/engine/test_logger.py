import csv
import sys
import types

from s4vision.engine.logger import MetricLogger


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_csv_rows_and_truncation_on_resume(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=False)
    for epoch in range(3):
        logger.log({"epoch": epoch, "step": 10 * (epoch + 1), "resolution": 14, "train_loss": 1.0 / (epoch + 1)})
    assert [r["epoch"] for r in _rows(tmp_path / "log.csv")] == ["0", "1", "2"]
    MetricLogger(tmp_path, tensorboard=False).truncate_from(1)  # a run resumed inside epoch 1
    rows = _rows(tmp_path / "log.csv")
    assert [r["epoch"] for r in rows] == ["0"] and rows[0]["eval_top1"] == ""


def test_tensorboard_mirrors_scalars_when_installed(tmp_path, monkeypatch):
    written = []

    class FakeWriter:
        def __init__(self, log_dir):
            written.append(("dir", log_dir))

        def add_scalar(self, tag, value, global_step):
            written.append((tag, value, global_step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    logger = MetricLogger(tmp_path)
    logger.log({"epoch": 0, "step": 5, "resolution": 14, "train_loss": 0.5, "eval_top1": 90.0})
    logger.close()
    assert ("train_loss", 0.5, 5) in written and ("eval_top1", 90.0, 5) in written
    assert not any(w[0] in ("epoch", "step") for w in written) and written[-1] == ("closed",)


def test_torn_rows_are_dropped_and_the_last_row_is_read_back(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=False)
    for epoch in range(2):
        logger.log({"epoch": epoch, "step": 10 * (epoch + 1), "resolution": 14, "eval_top1": 50.0 + epoch})
    with open(tmp_path / "log.csv", "a") as f:
        f.write("1")  # a row cut short (by an older version's append, or by hand): epoch "1" of "10"
    assert MetricLogger(tmp_path, tensorboard=False).last_row()["eval_top1"] == 51.0
    logger.truncate_from(5)
    assert [r["epoch"] for r in _rows(tmp_path / "log.csv")] == ["0", "1"]
    assert not list(tmp_path.glob(".log.csv.*"))  # rewritten atomically, no temporary file left
