"""Default launch commands of OpenAI-compatible engines we manage but do not install.

Each is a template for `targets.target.command_target` (placeholders: {port} {model}
{model_id} {quantization} {dtype} {max_num_seqs} {max_num_batched_tokens}
{tensor_parallel_size} {python}); `SERVECAT_TARGET_COMMANDS` overrides any of them. The flags
follow each project's CLI documentation; none of these engines installs on the CPU machines
servecat is developed on, so they are exercised here only through the template mechanism.
"""

from __future__ import annotations

DEFAULT_COMMANDS: dict[str, str] = {
    "tgi": ("text-generation-launcher --model-id {model_id} --hostname 127.0.0.1 --port {port} "
            "--num-shard {tensor_parallel_size} --max-concurrent-requests {max_num_seqs} "
            "--dtype {dtype}"),
    "sglang": ("{python} -m sglang.launch_server --model-path {model_id} --host 127.0.0.1 "
               "--port {port} --tp {tensor_parallel_size} --max-running-requests {max_num_seqs} "
               "--served-model-name {model} --dtype {dtype}"),
    "lmdeploy": ("lmdeploy serve api_server {model_id} --server-name 127.0.0.1 "
                 "--server-port {port} --tp {tensor_parallel_size} --max-batch-size {max_num_seqs} "
                 "--model-name {model}"),
}
