"""The Label panel on real data (the MNIST test set from ../shared/data): crisp 28x28 digits, labels stored."""
import io

import numpy as np
from PIL import Image

import dcai_widgets as dw
from dcai_widgets.widgets.label_panel import LabelPanel


def test_mnist_items_are_labeled_from_the_keyboard(shared_data, tmp_path):
    s = dw.Session.open(shared_data / "mnist-test", store=tmp_path / "mnist.db")
    p = LabelPanel(s, annotator="ada", background=False)
    img = np.asarray(Image.open(io.BytesIO(p.card.image.value)).convert("L"))
    assert img.shape == (224, 224)                                   # 28 px * 8, nearest-neighbour
    assert np.array_equal(img[::8, ::8], s.items.as_uint8(p.current))
    truth = {}
    for _ in range(12):
        i = p.current
        truth[i] = str(s.y_true[i])
        p.press(truth[i])
    cur = s.labeled()
    assert dict(zip(cur["id"], cur["label"])) == truth and set(cur["annotator"]) == {"ada"}
    assert len(set(s.y_true[list(truth)])) >= 5   # the cold start spreads over the digits
