"""Data protection: card numbers found and masked, keyed tokens that join across rotations, AES-GCM columns
that come back only with the right key and column, and files that leave with no card number in them.

Over ~400 lines: one test file per module, and protection has many cases that must each hold."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import re
import stat
from pathlib import Path

import polars as pl
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli import main
from engine.errors import DataFileError, InvalidInputError
from engine.security.cards import count_cards, find_cards, luhn_valid
from engine.security.protect import (
    ENV_KEYS,
    KeyRing,
    decrypt,
    encrypt,
    mask_pan,
    mask_text,
    protect_file,
    protect_frame,
    reveal_file,
    reveal_frame,
    scan_files_for_pans,
    token_matches,
    tokenize,
)

# Network test numbers, published for exactly this use.
TEST_PANS = ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "4012888888881881"]


def check_digit(body: str) -> str:
    """The Luhn check digit, computed the textbook way (double every second digit from the right of the
    full number), independently of the module."""
    digits = [int(c) for c in body + "0"]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            total += d // 10 + d % 10
        else:
            total += d
    return str((10 - total % 10) % 10)


def make_pan(rng: random.Random, length: int = 16, prefix: str = "4") -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + check_digit(body)


def non_luhn(pan: str) -> str:
    return pan[:-1] + str((int(pan[-1]) + 1) % 10)


def grouped(pan: str, sep: str) -> str:
    return sep.join(pan[i : i + 4] for i in range(0, len(pan), 4))


def ring(*versions: int) -> KeyRing:
    return KeyRing({v: os.urandom(32) for v in versions or (1,)})


KEYS = ring(1)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "finscore-keys.txt"
    KeyRing.generate(path)
    return path


# -- Luhn, finding and masking ------------------------------------------------------------------------------


@pytest.mark.parametrize("pan", TEST_PANS)
def test_luhn_accepts_test_numbers_and_rejects_a_changed_digit(pan: str) -> None:
    assert luhn_valid(pan)
    assert not luhn_valid(non_luhn(pan))
    assert not luhn_valid(pan[:4] + str((int(pan[4]) + 3) % 10) + pan[5:])


@pytest.mark.parametrize("text", ["", "4111 1111 1111 1111", "4111-1111", "41111111111111a1", "٤١١١١١١١١١١١١١١١"])
def test_luhn_refuses_anything_but_ascii_digits(text: str) -> None:
    assert not luhn_valid(text)


@given(body=st.text(alphabet="0123456789", min_size=12, max_size=18))
def test_luhn_agrees_with_the_check_digit(body: str) -> None:
    right = check_digit(body)
    assert luhn_valid(body + right)
    assert not any(luhn_valid(body + d) for d in "0123456789" if d != right)


@pytest.mark.parametrize("sep", [" ", "-"])
def test_find_pans_sees_grouped_numbers_among_other_digits(sep: str) -> None:
    rng = random.Random(3)
    pan = make_pan(rng)
    text = f"2024-01-15 10:00:01 paid {grouped(pan, sep)} exp 12-27, ref 12345 ok"
    spans = find_cards(text)
    assert len(spans) == 1
    start, end = spans[0]
    assert re.sub(r"[ -]", "", text[start:end]) == pan


def test_find_pans_ignores_non_luhn_and_longer_digit_runs() -> None:
    rng = random.Random(4)
    pan = make_pan(rng)
    assert find_cards(pan) == [(0, 16)]
    assert find_cards(non_luhn(pan)) == []
    assert find_cards("order 12345" + pan) == []  # 21 digits: an id, not a card
    assert find_cards(f"ids 1234567890 {pan}0000") == []


def test_longest_card_number_wins_so_no_tail_is_left_unmasked() -> None:
    rng = random.Random(11)
    head = make_pan(rng)  # a valid 16-digit prefix of a valid 19-digit number
    body = head + f"{rng.randrange(100):02d}"
    full = grouped(body + check_digit(body), " ")
    assert find_cards(f"x {full} y") == [(2, 2 + len(full))]
    assert sum(c.isdigit() for c in mask_text(full)) == 10


def test_mask_leaves_a_16_digit_non_luhn_number_alone() -> None:
    number = non_luhn(make_pan(random.Random(5)))
    text = f"account {number} and {grouped(number, ' ')}"
    assert mask_text(text) == text


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32), length=st.integers(13, 19), sep=st.sampled_from(["", " ", "-"]))
def test_mask_shows_at_most_first_6_and_last_4(seed: int, length: int, sep: str) -> None:
    pan = make_pan(random.Random(seed), length)
    shown = grouped(pan, sep) if sep else pan
    masked = mask_pan(shown)
    assert len(masked) == len(shown)
    assert [i for i, c in enumerate(masked) if not c.isdigit() and c != "*"] == [
        i for i, c in enumerate(shown) if not c.isdigit()
    ]
    digits = masked.replace(sep, "") if sep else masked
    kept = [c for c in digits if c != "*"]
    assert len(kept) <= 10 and digits.count("*") >= 6
    assert digits.endswith(pan[-4:])
    lead = len(digits) - len(digits.lstrip("0123456789"))
    assert digits[:lead] == pan[:lead] and lead == min(6, length - 10)


def test_mask_text_removes_every_card_number() -> None:
    rng = random.Random(6)
    a, b = make_pan(rng), make_pan(rng, 15, "37")
    text = f"card {grouped(a, '-')} then {b}; other {non_luhn(a)}"
    masked = mask_text(text)
    assert count_cards(text) == 2
    assert count_cards(masked) == 0
    assert a not in masked.replace("-", "") and b not in masked
    assert masked.endswith(non_luhn(a))


def test_mask_pan_refuses_a_non_card_without_echoing_it() -> None:
    with pytest.raises(InvalidInputError) as err:
        mask_pan("Jane Doe 4111")
    assert "Jane" not in str(err.value) and "4111" not in str(err.value)


# -- Keys ---------------------------------------------------------------------------------------------------


def test_generate_writes_a_private_file_and_never_overwrites(key_file: Path) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert KeyRing.load(key_file).versions == (1,)
    before = key_file.read_text()
    with pytest.raises(DataFileError, match="already exists"):
        KeyRing.generate(key_file)
    assert key_file.read_text() == before


def test_key_file_open_to_others_is_refused(key_file: Path) -> None:
    key_file.chmod(0o644)
    with pytest.raises(DataFileError, match="chmod 600") as err:
        KeyRing.load(key_file)
    hex_key = re.search(r"v1 ([0-9a-f]{64})", key_file.read_text())
    assert hex_key is not None and hex_key.group(1) not in str(err.value)
    key_file.chmod(0o600)
    assert KeyRing.load(key_file).current == 1


def test_rotate_appends_the_next_version(key_file: Path) -> None:
    first = KeyRing.load(key_file)
    rotated = KeyRing.rotate(key_file)
    assert rotated.versions == (1, 2) and rotated.current == 2
    assert KeyRing.load(key_file).versions == (1, 2)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert tokenize("x", KeyRing.load(key_file), version=1) == tokenize("x", first)


def test_keys_from_environment_and_bad_entries_never_echo(monkeypatch: pytest.MonkeyPatch) -> None:
    k1, k2 = os.urandom(32).hex(), os.urandom(32).hex()
    monkeypatch.setenv(ENV_KEYS, f"v1 {k1};v3 {k2}")
    keys = KeyRing.from_env_or_file(None)
    assert keys.versions == (1, 3) and keys.current == 3
    assert k1 not in repr(keys) and "versions=[1, 3]" in repr(keys)
    monkeypatch.setenv(ENV_KEYS, f"v1 {k1}\nv2 {k2[:-2]}")
    with pytest.raises(InvalidInputError, match="entry 2") as err:
        KeyRing.from_env_or_file(None)
    assert k2[:-2] not in str(err.value)
    monkeypatch.delenv(ENV_KEYS)
    with pytest.raises(InvalidInputError, match=ENV_KEYS):
        KeyRing.from_env_or_file(None)


# -- Tokens -------------------------------------------------------------------------------------------------


def test_tokens_are_deterministic_and_normalise_card_numbers() -> None:
    pan = make_pan(random.Random(7))
    token = tokenize(pan, KEYS)
    assert re.fullmatch(r"tok1:[A-Za-z0-9_-]{43}", token)
    assert tokenize(pan, KEYS) == token
    assert tokenize(grouped(pan, " "), KEYS) == token == tokenize(grouped(pan, "-"), KEYS)
    assert tokenize(non_luhn(pan), KEYS) != token
    assert tokenize("alice", KEYS) != tokenize("bob", KEYS)


def test_tokens_differ_by_key_and_version() -> None:
    keys = ring(1, 2)
    assert tokenize("alice", keys) != tokenize("alice", ring(1, 2))
    assert tokenize("alice", keys).startswith("tok2:")
    assert tokenize("alice", keys, version=1).startswith("tok1:")
    assert tokenize("alice", keys, version=1)[5:] != tokenize("alice", keys)[5:]


def test_token_is_a_keyed_hmac_not_a_plain_hash(key_file: Path) -> None:
    pan = make_pan(random.Random(8))
    digest = base64.urlsafe_b64decode(tokenize(grouped(pan, " "), KeyRing.load(key_file))[5:] + "=")
    assert digest not in {hashlib.sha256(pan.encode()).digest(), hashlib.sha256(grouped(pan, " ").encode()).digest()}
    master = bytes.fromhex(re.findall(r"v1 ([0-9a-f]{64})", key_file.read_text())[0])
    subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"finscore token").derive(master)
    assert digest == hmac.new(subkey, pan.encode(), hashlib.sha256).digest()


def test_old_tokens_still_match_after_rotation(key_file: Path) -> None:
    before = tokenize("4111 1111 1111 1111", KeyRing.load(key_file))
    keys = KeyRing.rotate(key_file)
    after = tokenize("4111111111111111", keys)
    assert after != before and after.startswith("tok2:")
    assert token_matches("4111111111111111", before, keys) and token_matches("4111111111111111", after, keys)
    assert not token_matches("5555555555554444", before, keys)
    column = pl.Series("card", [before, after, tokenize("5555555555554444", keys), None])
    assert token_matches("4111-1111-1111-1111", column, keys).to_list() == [True, True, False, None]
    with pytest.raises(InvalidInputError, match="not a finscore token"):
        token_matches("4111111111111111", "4111111111111111", keys)


def test_tokenize_a_column_equals_tokenize_each_value() -> None:
    values = ["a", None, "b", "a", "4111 1111 1111 1111"]
    tokens = tokenize(pl.Series("v", values), KEYS)
    assert tokens.to_list() == [None if v is None else tokenize(v, KEYS) for v in values]


# -- Encryption ---------------------------------------------------------------------------------------------


@settings(max_examples=50)
@given(value=st.text(max_size=200), context=st.text(min_size=1, max_size=20))
def test_encrypt_round_trips(value: str, context: str) -> None:
    sealed = encrypt(value, KEYS, context=context)
    assert sealed.startswith("enc1:")
    assert decrypt(sealed, KEYS, context=context) == value


def test_each_encryption_uses_a_fresh_nonce() -> None:
    a, b = (encrypt("same value", KEYS, context="iban") for _ in range(2))
    assert a != b
    raw_a, raw_b = (base64.urlsafe_b64decode(x[5:] + "=" * (-len(x[5:]) % 4)) for x in (a, b))
    assert raw_a[:12] != raw_b[:12]


def _flip(sealed: str, at: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(sealed[5:] + "=" * (-len(sealed[5:]) % 4)))
    raw[at] ^= 1
    return sealed[:5] + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("attack", ["tamper-nonce", "tamper-body", "context", "key", "truncated", "garbage"])
def test_decrypt_fails_loudly_without_echoing(attack: str) -> None:
    secret = "Jane Q Customer DE89370400440532013000"
    sealed = encrypt(secret, KEYS, context="iban")
    text, keys, context = sealed, KEYS, "iban"
    if attack == "tamper-nonce":
        text = _flip(sealed, 3)
    elif attack == "tamper-body":
        text = _flip(sealed, 20)
    elif attack == "context":
        context = "name"
    elif attack == "key":
        keys = ring(1)
    elif attack == "truncated":
        text = sealed[:20]
    else:
        text = secret
    with pytest.raises(InvalidInputError) as err:
        decrypt(text, keys, context=context)
    assert "Jane" not in str(err.value) and "DE89" not in str(err.value)
    assert decrypt(sealed, KEYS, context="iban") == secret


def test_old_ciphertexts_decrypt_after_rotation(key_file: Path) -> None:
    old = encrypt("salary 52000", KeyRing.load(key_file), context="note")
    keys = KeyRing.rotate(key_file)
    assert encrypt("x", keys, context="note").startswith("enc2:")
    assert decrypt(old, keys, context="note") == "salary 52000"
    with pytest.raises(InvalidInputError, match="version 2"):
        decrypt(encrypt("x", keys, context="note"), ring(1), context="note")


# -- Frames and files ---------------------------------------------------------------------------------------


def customers(n: int = 40) -> pl.DataFrame:
    rng = random.Random(9)
    pans = [make_pan(rng, rng.choice([15, 16, 19])) for _ in range(n)]
    return pl.DataFrame(
        {
            "card": [grouped(p, " ") if i % 3 == 0 else p for i, p in enumerate(pans)],
            "iban": [None if i % 7 == 0 else f"DE{rng.randrange(10**20):020d}" for i in range(n)],
            "note": [f"paid with {p} on 2024-05-0{i % 9 + 1}" if i % 2 else "no card here" for i, p in enumerate(pans)],
            "amount": [round(rng.uniform(1, 500), 2) for _ in range(n)],
        }
    )


def test_protect_frame_keeps_nulls_and_other_columns() -> None:
    df = customers()
    out = protect_frame(df, tokenize=["card"], encrypt=["iban"], mask=["note"], keys=KEYS)
    assert out.columns == df.columns
    assert out["iban"].is_null().to_list() == df["iban"].is_null().to_list()
    assert out["amount"].to_list() == df["amount"].to_list()
    assert all(t.startswith("tok1:") for t in out["card"].to_list())
    assert reveal_frame(out, decrypt=["iban"], keys=KEYS)["iban"].to_list() == df["iban"].to_list()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet="0123456789 -ab", max_size=30), st.sampled_from(TEST_PANS))))
def test_masking_a_column_masks_each_value_as_mask_text_does(values: list[str | None]) -> None:
    """Only the rows Polars picks as candidates reach Python; each must land back at its own row."""
    out = protect_frame(pl.DataFrame({"note": values, "n": range(len(values))}, strict=False), mask=["note"])
    assert out["note"].to_list() == [None if v is None else mask_text(v) for v in values]
    assert out["n"].to_list() == list(range(len(values)))


def test_reveal_names_the_row_and_column_of_a_bad_value() -> None:
    out = protect_frame(customers(5), encrypt=["iban", "note"], keys=KEYS)
    swapped = out.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.col("note")).otherwise("iban").alias("iban")
    )
    with pytest.raises(InvalidInputError, match=r"^row 4: a value in 'iban' cannot be decrypted") as err:
        reveal_frame(swapped, decrypt=["iban"], keys=KEYS)
    assert "paid" not in str(err.value) and "DE" not in str(err.value)


def test_missing_column_is_named_with_the_columns_available() -> None:
    with pytest.raises(DataFileError) as err:
        protect_frame(customers(), tokenize=["pan"], keys=KEYS)
    assert "'pan'" in str(err.value) and "'card'" in str(err.value) and "'iban'" in str(err.value)
    with pytest.raises(InvalidInputError, match="'card'"):
        protect_frame(customers(), tokenize=["card"], mask=["card"], keys=KEYS)
    with pytest.raises(InvalidInputError, match="key ring"):
        protect_frame(customers(), encrypt=["iban"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_protect_file_round_trip_leaves_no_card_number(tmp_path: Path, suffix: str) -> None:
    df = customers()
    src, dst, back = (tmp_path / f"{name}{suffix}" for name in ("in", "out", "back"))
    if suffix == ".csv":
        df.write_csv(src)
    else:
        df.write_parquet(src)
    counts = protect_file(src, dst, tokenize=["card"], encrypt=["iban"], mask=["note"], keys=KEYS)
    assert counts == {
        "rows": df.height,
        "tokenized": df.height,
        "encrypted": df.height - df["iban"].null_count(),
        "masked": df.height // 2,
        "pans_found": df.height // 2,
        "pans_left": 0,
    }
    out = pl.read_csv(dst) if suffix == ".csv" else pl.read_parquet(dst)
    cells = [str(v) for col in out.columns for v in out[col].to_list() if v is not None]
    assert sum(map(count_cards, cells)) == 0
    if suffix == ".csv":
        assert scan_files_for_pans([src]) == [(src, df.height + df.height // 2)]
        assert scan_files_for_pans([dst]) == [(dst, 0)]
    assert out["card"].to_list() == tokenize(df["card"], KEYS).to_list()  # joins still work
    assert reveal_file(dst, back, decrypt=["iban"], keys=KEYS) == {
        "rows": df.height,
        "decrypted": df.height - df["iban"].null_count(),
    }
    revealed = pl.read_csv(back) if suffix == ".csv" else pl.read_parquet(back)
    assert revealed["iban"].to_list() == df["iban"].to_list()


def test_protect_file_counts_values_masked_and_card_numbers_left(tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "card": [4111111111111111, 5555555555554444, 1234],
            "memo": ["4012888888881881", "none", None],
            "chat": ["cards 4111-1111-1111-1111 and 378282246310005", "no card", "pin 1234"],
        }
    )
    df.write_csv(tmp_path / "in.csv")
    counts = protect_file(tmp_path / "in.csv", tmp_path / "out.csv", tokenize=["memo"], mask=["chat"], keys=KEYS)
    assert counts == {"rows": 3, "tokenized": 2, "encrypted": 0, "masked": 1, "pans_found": 2, "pans_left": 2}
    with pytest.raises(DataFileError, match=r"in\.csv: no column 'chats' to mask; the columns are 'card', 'memo'"):
        protect_file(tmp_path / "in.csv", tmp_path / "out.csv", mask=["chats"])


def test_scan_files_walks_folders_and_skips_binary(tmp_path: Path) -> None:
    rng = random.Random(10)
    logs = tmp_path / "leak-scan-selftest-logs"  # planted card numbers: the log scan after the suites skips it
    logs.mkdir()
    (logs / "server.log").write_text(f"I0512 ok\nrequest card={make_pan(rng)}\n{grouped(make_pan(rng), '-')} x\n")
    (logs / "clean.log").write_text(f"I0512 request id {non_luhn(make_pan(rng))}\n")
    (logs / "blob.bin").write_bytes(b"\0\1" + make_pan(rng).encode())
    assert scan_files_for_pans([logs]) == [(logs / "clean.log", 0), (logs / "server.log", 2)]
    with pytest.raises(DataFileError, match="no such file"):
        scan_files_for_pans([tmp_path / "missing.log"])


# -- CLI ----------------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    """The ``finscore`` command in this process: its exit code (an error prints one line instead of raising)."""
    return main(list(argv))


def test_cli_generates_keys_protects_and_reveals_without_printing_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = customers(12)
    df.write_csv(tmp_path / "in.csv")
    keys = str(tmp_path / "keys.txt")
    assert run_cli("protect-keys", "generate", "--keys", keys) == 0
    assert run_cli("protect-keys", "rotate", "--keys", keys) == 0
    src, out, back = (str(tmp_path / n) for n in ("in.csv", "out.parquet", "back.csv"))
    argv = ["protect", src, "--out", out, "--keys", keys, "--tokenize", "card", "--mask", "note", "--encrypt", "iban"]
    assert run_cli(*argv) == 0
    assert run_cli("protect", out, "--out", back, "--keys", keys, "--encrypt", "iban", "--reveal") == 0
    assert run_cli("protect", out, "--out", back, "--keys", keys, "--tokenize", "card", "--reveal") == 2
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "12 rows; 12 values tokenized" in text and "values decrypted" in text
    assert "key version 2 is now current" in text
    assert count_cards(text) == 0 and not any(v in text for v in df["iban"].drop_nulls().to_list())
    assert Path(keys).read_text().split()[-1] not in text
    assert pl.read_csv(back)["iban"].to_list() == df["iban"].to_list()
    assert pl.read_parquet(out)["card"].str.starts_with("tok2:").all()
