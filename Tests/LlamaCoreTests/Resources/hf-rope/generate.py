"""Small random-weight LlamaForCausalLM directories whose config scales RoPE, with transformers' float64
outputs on the stored weights: `python generate.py .` (transformers 5.x, torch) run in this folder."""
import json, os, shutil, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

MODELS = {
    # LLaMA 3.1's scaling; original context 256 puts one of the four frequency pairs in the smoothed band
    # (wavelength between 256 / 4 and 256 / 1), one above it (divided by the factor), one below (kept).
    "rope-llama3": dict(dtype=torch.float32, tie_word_embeddings=True, rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=256)),
    # Position interpolation: every frequency divided by the factor; bfloat16 weights.
    "rope-linear": dict(dtype=torch.bfloat16, tie_word_embeddings=False, rope_parameters=dict(
        rope_type="linear", rope_theta=10000.0, factor=4.0)),
}

def main(out):
    for name, spec in MODELS.items():
        torch.manual_seed(len(name))
        config = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                             rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                             tie_word_embeddings=spec["tie_word_embeddings"], rope_parameters=spec["rope_parameters"])
        model = LlamaForCausalLM(config)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.3)
        directory = os.path.join(out, name)
        shutil.rmtree(directory, ignore_errors=True)
        model.to(spec["dtype"]).save_pretrained(directory)
        exact = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float64).eval()
        # A prompt long enough for the low frequencies to turn: positions up to ~600.
        g = torch.Generator().manual_seed(7)
        prompt = [1] + torch.randint(3, 256, (599,), generator=g).tolist()
        sequence, greedy, logprobs = list(prompt), [], []
        with torch.no_grad():
            for _ in range(16):
                logits = exact(torch.tensor([sequence])).logits[0, -1]
                token = int(logits.argmax())
                greedy.append(token)
                logprobs.append(float(torch.log_softmax(logits, -1)[token]))
                sequence.append(token)
            everything = exact(torch.tensor([sequence])).logits[0]
        inverse = ROPE_INIT_FUNCTIONS[spec["rope_parameters"]["rope_type"]](exact.config, "cpu")[0]
        positions = [0, 1, 255, 599, len(sequence) - 2]
        reference = {
            "note": "transformers LlamaForCausalLM in float64 on the stored weights; greedy without EOS stop; "
                    "logits_at[p] = logits after feeding (prompt_ids + greedy_ids)[0..p]; inv_freq: transformers' "
                    "RoPE init function for the config (float32)",
            "prompt_ids": prompt, "greedy_ids": greedy, "greedy_logprobs": logprobs,
            "logits_at": {str(p): everything[p].tolist() for p in positions},
            "inv_freq": inverse.double().tolist(),
        }
        with open(os.path.join(out, name + ".reference.json"), "w") as f:
            json.dump(reference, f)
        print(name, "greedy", greedy[:8], "inv_freq", [f"{x:.6g}" for x in reference["inv_freq"]])

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
