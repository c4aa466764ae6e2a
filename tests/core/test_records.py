"""Per-image records (auditkit.records.ImageRows): the same rows in memory and spilled to a
file, the limit read from AUDITKIT_RECORDS_IN_MEMORY, and the clean pass and the shared
Grad-CAM maps reading their rows from a spilled record."""
from __future__ import annotations

import pytest
import torch

from auditkit import UsageError
from auditkit.context import CleanPass
from auditkit.records import IN_MEMORY_BYTES, RECORDS_ENV, ImageRows, in_memory_limit
from auditkit.saliency import EvaluationMaps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool])
@pytest.mark.parametrize("row_shape", [(), (7,), (3, 5)])
def test_spilled_rows_read_back_bit_for_bit_as_rows_in_memory(dtype, row_shape, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    generator = torch.Generator().manual_seed(0)
    n = 23
    values = (torch.randn((n, *row_shape), generator=generator) * 50).to(dtype)
    kept, spilled = ImageRows(n, "cpu", limit=1 << 30), ImageRows(n, "cpu", limit=0)
    # batches of positions as checks write them: runs, a shuffled batch, a single row
    for index in (torch.arange(0, 8), torch.tensor([15, 9, 10, 11, 20]), torch.tensor([22]), torch.arange(12, 15)):
        kept.write(index, values[index])
        spilled.write(index, values[index])
    assert not kept.spilled and spilled.spilled
    for index in (torch.tensor([22, 0, 9, 10, 3]), torch.arange(9, 16), torch.tensor([], dtype=torch.long)):
        a, b = kept.read(index), spilled.read(index)
        assert a.dtype == b.dtype == dtype and a.shape == b.shape == (len(index), *row_shape)
        assert torch.equal(a.view(torch.uint8) if dtype != torch.bool else a, b.view(torch.uint8) if dtype != torch.bool else b)
    written = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 20, 22])
    assert torch.equal(spilled.read(written), values[written])
    for rows in (kept, spilled):  # a row never written is never read as if it held something
        with pytest.raises(ValueError, match="rows never written: positions 8, 16, 17, 18, 19 and more"):
            rows.full()
    rest = torch.tensor([8, 16, 17, 18, 19, 21])
    kept.write(rest, values[rest])
    spilled.write(rest, values[rest])
    assert torch.equal(kept.full(), spilled.full())


def test_rows_spill_to_an_unlinked_file_only_beyond_the_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    row = torch.zeros(1, 10)  # 40 bytes a row
    fits, over = ImageRows(100, "cpu", limit=4000), ImageRows(100, "cpu", limit=3999)
    fits.write(torch.tensor([0]), row)
    over.write(torch.tensor([0]), row)
    assert not fits.spilled and over.spilled
    assert list(tmp_path.iterdir()) == []  # unlinked: nothing is left behind, even on a crash
    over.close()


def test_rows_of_another_shape_or_outside_the_images_are_refused():
    rows = ImageRows(4, "cpu", limit=0)
    with pytest.raises(RuntimeError, match="no rows were written"):
        rows.read(torch.tensor([0]))
    rows.write(torch.tensor([0, 1]), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"expected \[2, 3\] torch.float32"):
        rows.write(torch.tensor([2, 3]), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 4\)"):
        rows.write(torch.tensor([4]), torch.ones(1, 3))
    rows.close()


def test_the_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(RECORDS_ENV, raising=False)
    assert in_memory_limit() == IN_MEMORY_BYTES == 64 << 20
    for raw, expected in [("0", 0), ("1048576", 1 << 20), ("64M", 64 << 20), ("2g", 2 << 30), ("512KB", 512 << 10)]:
        monkeypatch.setenv(RECORDS_ENV, raw)
        assert in_memory_limit() == expected, raw
    for raw in ("-1", "lots", "1.5G", "64T"):
        monkeypatch.setenv(RECORDS_ENV, raw)
        with pytest.raises(UsageError, match=f"{RECORDS_ENV} must be a number of bytes"):
            in_memory_limit()


def test_a_clean_pass_reads_a_batch_of_spilled_scores_as_the_same_scores_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    logits = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    record = ImageRows(10, "cpu", limit=0)
    record.write(torch.arange(10), logits)
    spilled = CleanPass(record, logits.argmax(1), None)
    kept = CleanPass(logits, logits.argmax(1), None)
    index = torch.tensor([3, 4, 5, 9])
    assert spilled.num_classes == kept.num_classes == 4
    assert torch.equal(spilled.logits_at(index), logits[index])
    assert torch.equal(spilled.probs_at(index), kept.probs[index])
    assert torch.equal(spilled.log_probs_at(index), kept.log_probs[index])
    assert torch.equal(spilled.logits, logits)  # every row at once, read from the file
    probabilities = CleanPass(torch.softmax(logits, 1), logits.argmax(1), None, score_kind="probabilities")
    with pytest.raises(Exception, match="probabilities, not logits"):
        probabilities.logits_at(index)
    assert torch.equal(probabilities.probs_at(index), torch.softmax(logits, 1)[index])
    labels_only = CleanPass(None, logits.argmax(1), None, score_kind=None)
    assert labels_only.num_classes is None
    with pytest.raises(Exception, match="labels only"):
        labels_only.scores_at(index)


def test_shared_maps_are_computed_once_and_read_back_from_a_spilled_record(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv(RECORDS_ENV, "0")
    maps = torch.rand(6, 2, 3, generator=torch.Generator().manual_seed(2))
    store = EvaluationMaps(6, torch.device("cpu"))
    calls = []

    def compute(index):
        def run():
            calls.append(index.tolist())
            return maps[index].clone()
        return run

    assert store.stored(torch.arange(3)) is None
    first = torch.arange(0, 3)
    assert torch.equal(store.rows(first, compute(first)), maps[first])
    assert torch.equal(store.rows(first, compute(first)), maps[first])  # stored: not computed again
    overlap = torch.arange(2, 6)
    assert torch.equal(store.rows(overlap, compute(overlap)), maps[overlap])
    assert calls == [[0, 1, 2], [2, 3, 4, 5]]
    assert torch.equal(store.stored(torch.arange(6)), maps)


def test_a_bad_limit_is_a_one_line_usage_error_before_anything_loads(tmp_path, monkeypatch, capsys):
    from auditkit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RECORDS_ENV, "lots")
    code = main(["run", "--model", "auditkit.testing.models:tiny_factory", "--data", "synthetic:shapes?n=8&size=32",
                 "--baselines", "none", "--checks", "accuracy.clean", "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 4
    assert err.strip() == f"auditkit: error: {RECORDS_ENV} must be a number of bytes such as 0, 1048576 or 64M, got 'lots'"
    assert not (tmp_path / "r.json").exists()


def test_an_audit_with_every_record_spilled_gives_the_in_memory_report(tmp_path, monkeypatch):
    """One process, the tiny model: the clean scores and the shared maps in files give the
    report they give in memory, outcome, metric and message (the two-process test in
    test_distributed.py spills as well)."""
    import auditkit
    from auditkit.testing.models import tiny_factory

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    checks = ["accuracy.clean", "gradcam.localization", "cam.consistency", "whitebox.fgsm"]
    reports = []
    for limit in ("64M", "0"):
        monkeypatch.setenv(RECORDS_ENV, limit)
        torch.manual_seed(0)
        run = auditkit.audit(tiny_factory(4), "synthetic:shapes?n=24&size=32", checks=checks, baselines=[],
                             device="cpu", batch_size=8)
        reports.append([(r.check, r.outcome, r.metrics, r.message) for r in run.results])
    assert reports[0] == reports[1]
    assert {c for c, *_ in reports[0]} == set(checks)


def test_a_full_disk_says_where_and_what_to_do(tmp_path, monkeypatch):
    import errno

    from auditkit import records

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    rows = ImageRows(4, "cpu", limit=0)

    def full_disk(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.os, "pwrite", full_disk)
    with pytest.raises(RuntimeError, match=r"could not write per-image records to a temporary file in .*No space left "
                                           r"on device.*raise AUDITKIT_RECORDS_IN_MEMORY"):
        rows.write(torch.arange(2), torch.ones(2, 3))
    rows.close()


def test_written_says_which_positions_hold_a_row():
    rows = ImageRows(5, "cpu", limit=1 << 20)
    rows.write(torch.tensor([1, 3]), torch.ones(2, 2))
    assert rows.written(torch.tensor([0, 1, 2, 3, 4])).tolist() == [False, True, False, True, False]
