"""The simulator's processes import droid and episode; TensorFlow must stay out of them."""

import subprocess
import sys
import textwrap


def _tensorflow_loaded_after(imports: str) -> bool:
    code = textwrap.dedent(
        f"""
        import sys
        {imports}
        print("tensorflow" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return result.stdout.strip().splitlines()[-1] == "True"


def test_droid_and_episode_do_not_import_tensorflow():
    assert not _tensorflow_loaded_after("import vlaw.data.droid, vlaw.data.episode")


def test_data_modules_import_tensorflow_only_when_used():
    # Every TF-using module imports it lazily, so importing the package costs nothing.
    modules = (
        "rlds_read, rlds_write, windows, policy_windows, reward_windows, world_model_windows, "
        "mixture, norm_stats, transforms, synthetic, batches"
    )
    assert not _tensorflow_loaded_after(f"from vlaw.data import {modules}")
