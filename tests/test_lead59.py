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
