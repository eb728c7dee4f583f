"""ItemCard: small images are upscaled with nearest-neighbour (crisp blocks), texts and rows are escaped."""
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dcai_widgets.data import TableItems, TextItems
from dcai_widgets.widgets.item_card import ItemCard


class Sess:
    def __init__(self, items):
        self.items, self.classes = items, ["a", "b"]

    def __len__(self):
        return len(self.items)


def test_digit_is_upscaled_into_sharp_blocks(demo):
    card = ItemCard(demo, 0, size=192)
    img = np.asarray(Image.open(io.BytesIO(card.image.value)).convert("L"))
    assert img.shape == (192, 192)                      # 8x8 -> 24x24 blocks
    blocks = img.reshape(8, 24, 8, 24)
    assert (blocks.max(axis=(1, 3)) == blocks.min(axis=(1, 3))).all()   # no blur between pixels
    src = demo.items.as_uint8(0)
    assert np.array_equal(blocks[:, 0, :, 0], src)
    assert 'data-item="0"' in card.caption.value


def test_show_switches_items_and_counts_shows(demo):
    card = ItemCard(demo, 1)
    first = card.image.value
    card.show(2, note="2 of 9")
    assert card.image.value != first and card.item_id == 2 and "2 of 9" in card.caption.value
    assert 'data-seq="2"' in card.caption.value
    with pytest.raises(ValueError, match="out of range"):
        card.show(len(demo))
    card.set_badges(human="3", propagated="5", confidence=0.81, score=0.5)
    assert "3" in card.badges.value and "~5 0.81" in card.badges.value


def test_text_and_table_items_are_escaped():
    texts = Sess(TextItems(["<b>bold</b> & co", "x" * 5000]))
    card = ItemCard(texts, 0)
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in card.body.value and card.body in card.children
    card.show(1)
    assert len(card.body.value) < 2200  # long texts are cut
    rows = Sess(TableItems(pd.DataFrame({"age": [41, 7], "note": ["<script>", "ok"]})))
    card = ItemCard(rows, 0)
    assert "<th>age</th><td>41</td>" in card.body.value and "&lt;script&gt;" in card.body.value


def test_bad_size_is_named(demo):
    with pytest.raises(ValueError, match="size"):
        ItemCard(demo, 0, size=2)


def test_a_small_cards_text_wraps_inside_the_card_instead_of_a_240px_block_cut_on_both_sides():
    """Explore's grid (72 px cards in ~108 px cells) centred a 240 px text block in each card: the served
    page showed "ce was paid late" for "the invoice was paid late". A small card's text now takes the
    card's width and wraps (cut after a few lines); the Label panel's big card is unchanged."""
    from dcai_widgets.widgets.style import STYLE_CSS

    texts = Sess(TextItems(["the invoice was paid late (ticket 1)"]))
    small, big = ItemCard(texts, 0, size=72), ItemCard(texts, 0, size=192)
    assert "dcai-card-small" in small._dom_classes and small.body.layout.width == "100%"
    assert "dcai-card-small" not in big._dom_classes and big.body.layout.width == "240px"
    rule = STYLE_CSS[STYLE_CSS.index(".dcai-card-small .dcai-text"):].split("}")[0]
    assert "white-space: normal" in rule and "overflow: hidden" in rule and "max-height" in rule


def test_a_big_text_card_is_never_narrower_than_its_text_block():
    """The Clean tab's focus card (160 px, a flex column) was narrower than its 240 px text block, and
    the served page cut the centred text on both sides ("tor 796: [0.217, ..."). A text card's minimum
    width now holds its block; image cards and small cards keep their own sizing."""
    texts = Sess(TextItems(["vector 796: [0.217, -0.565, -0.204, 2.78]"]))
    assert ItemCard(texts, 0, size=160).layout.min_width == "250px"
    assert ItemCard(texts, 0, size=300).layout.min_width == "310px"
    assert not ItemCard(texts, 0, size=72).layout.min_width
