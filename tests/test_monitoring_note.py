import logging
from types import SimpleNamespace

import pytest

from nbr_contrast.app.tasks import say_monitoring


@pytest.mark.parametrize(
    ("labelled", "monitored", "expected"),
    [
        (True, True, None),
        (False, True, "no labels: the online probe and the neighbour agreement are off"),
        (False, False, "no labelled evaluation set is configured"),
        (True, False, "no test images"),
    ],
)
def test_one_line_says_what_is_off(caplog, labelled, monitored, expected):
    datamodule = SimpleNamespace(labelled=labelled, monitored=monitored)
    with caplog.at_level(logging.INFO):
        say_monitoring(datamodule)  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records]
    if expected is None:
        assert lines == []
    else:
        assert len(lines) == 1
        assert expected in lines[0]
