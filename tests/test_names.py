"""Names that become paths, object keys and catalog ids (aux_assets/utils/names.py)."""

from __future__ import annotations

import pytest

from aux_assets.utils.names import (
    MAX_NAME_BYTES,
    UnsafeNameError,
    check_collection_id,
    check_item_id,
    check_safe_name,
    describe_char,
    normal_name,
    same_after_nfc,
    spelling,
    utf8_size,
)

COMPOSED = "S1A_\u00c9TAT"  # É as one code point
DECOMPOSED = "S1A_E\u0301TAT"  # E and a combining acute accent


def test_the_length_limit_counts_utf8_bytes_not_characters() -> None:
    assert check_safe_name("é" * 127, "item id") == "é" * 127  # 254 bytes
    with pytest.raises(UnsafeNameError) as err:
        check_safe_name("é" * 128, "item id")  # 128 characters, 256 bytes
    assert "item id 'éééé" in str(err.value)
    assert "is 256 bytes long in UTF-8 (128 characters)" in str(err.value)
    assert f"at most {MAX_NAME_BYTES} bytes: shorten it to 255 bytes or less" in str(err.value)


def test_reserved_bytes_leave_room_for_temporary_names() -> None:
    assert check_safe_name("a" * 210, "asset key", 45) == "a" * 210
    with pytest.raises(UnsafeNameError) as err:
        check_safe_name("a" * 211, "asset key", 45)
    assert str(err.value) == (
        f"asset key {'a' * 40!r}... is 211 bytes long in UTF-8 (211 characters); file names may "
        "have at most 255 bytes and temporary names made from it add 45 bytes: shorten it to "
        "210 bytes or less"
    )


def test_check_item_id_passes_reserved_bytes_on() -> None:
    assert check_item_id("X" * 236, 19) == "X" * 236
    with pytest.raises(UnsafeNameError, match=r"item id .* add 19 bytes"):
        check_item_id("X" * 237, 19)


@pytest.mark.parametrize(
    ("name", "described"),
    [
        ("S1A_\u202eFOE.EOF", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("S1A_\u200bAUX", "U+200B ZERO WIDTH SPACE"),
        ("\ufeffS1A_AUX", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("S1A_\u2066AUX", "U+2066 LEFT-TO-RIGHT ISOLATE"),
        ("S1A_AUX\u00ad", "U+00AD SOFT HYPHEN"),
    ],
)
def test_format_characters_are_refused_naming_the_code_point(name: str, described: str) -> None:
    for check in (lambda n: check_safe_name(n, "asset key"), check_item_id):
        with pytest.raises(UnsafeNameError) as err:
            check(name)
        assert f"contains {described}, an invisible format character; remove it" in str(err.value)


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(UnsafeNameError, match="contains U\\+D800, a lone surrogate"):
        check_safe_name("S1A_\ud800", "item id")


def test_collection_ids_with_format_characters_are_refused() -> None:
    with pytest.raises(UnsafeNameError, match="U\\+200B ZERO WIDTH SPACE"):
        check_collection_id("s1\u200b-aux")


def test_composed_and_decomposed_spellings_have_one_nfc_form() -> None:
    assert COMPOSED != DECOMPOSED
    assert normal_name(DECOMPOSED) == normal_name(COMPOSED) == COMPOSED
    assert check_item_id(COMPOSED) == COMPOSED  # letters with accents stay allowed


def test_messages_spell_names_with_code_points() -> None:
    assert describe_char("\u0301") == "U+0301 COMBINING ACUTE ACCENT"
    assert spelling(DECOMPOSED) == "S1A_E<U+0301>TAT"
    assert same_after_nfc("item id", COMPOSED, DECOMPOSED) == (
        "item id 'S1A_E<U+0301>TAT' is 'S1A_<U+00C9>TAT' spelled with other code points: "
        "the two are the same after NFC normalisation"
    )


def test_utf8_size() -> None:
    assert utf8_size("aé€😀") == 1 + 2 + 3 + 4
