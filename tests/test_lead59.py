"""The lead's own fixes of stop 59 (each failed on the code before it)."""

import pytest

from tokenpool.errors import OptionError
from tokenpool.model.request import EncodeRequest


@pytest.mark.parametrize("chunks", ["tokens:16", "boundaries:64", "spans"])
def test_windows_with_naive_chunks_speaks_of_spans_only_for_spans(chunks):
    """The refusal of long_documents='windows' with naive chunks said a span over max_length is cut even for token
    and boundary chunks, which are never cut (an over-long one is refused)."""
    with pytest.raises(OptionError, match="would be ignored") as caught:
        EncodeRequest(output="chunks", chunks=chunks, chunking="naive", long_documents="windows").check()
    assert ("span longer than max_length" in str(caught.value)) == (chunks == "spans")


def test_a_jax_mask_on_another_jax_device_is_moved_to_the_states_device():
    """A JAX mask on another device than the states failed with JAX's own 'incompatible devices' error; the README
    says a mask is converted to the hidden states' library and device (checked against a float64 loop)."""
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("jax")
    script = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, jax.numpy as jnp, numpy as np, tokenpool
        first, second = jax.devices()[:2]
        states = np.random.default_rng(0).normal(size=(3, 5, 4))
        mask = np.array([[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
        got = tokenpool.pool(jax.device_put(jnp.asarray(states, jnp.float32), first),
                             jax.device_put(jnp.asarray(mask, jnp.int32), second), "mean")
        want = [states[i][mask[i] == 1].mean(0) if mask[i].any() else np.zeros(4) for i in range(3)]
        assert list(got.devices()) == [first], got.devices()
        np.testing.assert_allclose(np.asarray(got), np.array(want), atol=1e-6)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("score", ["4_5", "n/a", "3,2", "nan", "4.5"])
def test_a_three_column_pairs_file_whose_first_pair_has_a_bad_score_is_not_read_as_a_header(tmp_path, score):
    """A 3-column tab file whose first line is a pair with a malformed score ('4_5') was taken for the header and
    its pair dropped without a word (only a well-formed number was caught)."""
    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.tsv"
    path.write_text(f"a cat\ta dog\t{score}\nred\tblue\t1.0\nup\tdown\t2.0\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"line 1: a pair \(score '" + score + "'\\) where the header should be"):
        read_pairs(str(path))


def test_a_three_column_pairs_file_with_a_named_header_still_reads(tmp_path):
    """The header check does not refuse real column names (compared with the file's own rows)."""
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.tsv"
    path.write_text("sentence one\tsentence two\tgold label\nred\tblue\t1.0\nup\tdown\t2.5\n", encoding="utf-8")
    pairs = read_pairs(str(path))
    assert list(pairs.scores) == [1.0, 2.5]


def test_a_naive_boundary_chunk_of_a_lower_casing_encoder_is_never_truncated(tmp_path):
    """Without a prompt, a naive boundary chunk of an encoder that lower-cases ("İ" -> "i" + U+0307) can still be
    more tokens alone than the splitter counted: it must be refused, not cut (a reviewer's find in this stop's
    own change). Reference: the tokenizer's own count of each chunk's lower-cased text."""
    import json

    pytest.importorskip("transformers")
    from test_encoder import _qwen2_weights
    from transformers import AutoTokenizer

    from tokenpool import Encoder

    _qwen2_weights(tmp_path, padding_side="right")
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": True, "max_seq_length": 128}))
    encoder = Encoder(tmp_path, pooling="mean", max_length=12, normalize=False, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = "man, dog brown İzmir. İs ΟΔΟΣ the Σ İzmir İ."
    try:
        got = encoder.encode_chunks([text], chunks="boundaries:12", chunking="naive")
    except OptionError as err:
        assert "over max_length 12" in str(err)
        return
    for start, end in zip(got.start.tolist(), got.end.tolist(), strict=True):
        assert len(tokenizer(text[start:end].lower())["input_ids"]) <= 12, text[start:end]


@pytest.mark.parametrize("big", [10**400, 10**5000, -(10**5000)], ids=["400", "5000", "-5000"])
def test_a_huge_integer_option_is_named_in_a_short_message(tiny, big):  # (tiny: a folder)
    """truncate_dim or a span end of 10**5000 raised Python's own ValueError ("Exceeds the limit (4300 digits) for
    integer string conversion") instead of the option's message, and 10**400 was printed in full (401 digits)."""
    from tokenpool import Encoder

    encoder = Encoder(tiny, device="cpu")
    digits = len(str(abs(big))) if abs(big) < 10**4000 else None
    for call in (lambda: encoder.encode(["a"], truncate_dim=big),
                 lambda: encoder.encode_chunks(["abc"], chunks="spans", spans=[[[0, big]]])):  # fmt: skip
        with pytest.raises(OptionError) as caught:
            call()
        message = str(caught.value)
        assert len(message) < 200, message
        assert (f"({digits} digits)" if digits else "integer of about 5000 digits") in message, message
