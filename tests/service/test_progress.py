from graywave.service.progress import WaveProgress


def test_without_a_terminal_progress_is_logged_periodically():
    lines: list[str] = []
    with WaveProgress(10, "wave morning", lines.append, every_s=0.0) as progress:
        progress.advance(4)
        progress.advance(6)
    assert lines == ["wave morning: 4/10 uploads handled", "wave morning: 10/10 uploads handled"]
    assert progress.done == 10


def test_log_lines_are_spaced_out():
    lines: list[str] = []
    with WaveProgress(10, "wave", lines.append, every_s=3600) as progress:
        for _ in range(10):
            progress.advance(1)
    assert lines == []
