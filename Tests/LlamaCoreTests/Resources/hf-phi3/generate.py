"""A small random-weight Phi3ForCausalLM directory (fused qkv_proj and gate_up_proj, grouped-query
attention, a sliding window of 48 within max_position_embeddings 512), with transformers' float64
outputs on the stored weights over a sequence that fills the window: `python generate.py .`
(transformers 5.x, torch) run in this folder."""
import json, os, shutil, sys
import torch
from transformers import Phi3Config, Phi3ForCausalLM

WINDOW = 48

def main(out):
    torch.manual_seed(13)
    config = Phi3Config(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                        original_max_position_embeddings=512, sliding_window=WINDOW, rms_norm_eps=1e-5,
                        rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = Phi3ForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    directory = os.path.join(out, "phi3-fused")
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    exact = Phi3ForCausalLM.from_pretrained(directory, dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(7)
    prompt = [1] + torch.randint(3, 256, (31,), generator=g).tolist()
    sequence, greedy, logprobs = list(prompt), [], []
    with torch.no_grad():
        # Up to the window's length: there sliding-window attention is full attention.
        while len(sequence) < WINDOW:
            logits = exact(torch.tensor([sequence])).logits[0, -1]
            token = int(logits.argmax())
            greedy.append(token)
            logprobs.append(float(torch.log_softmax(logits, -1)[token]))
            sequence.append(token)
        everything = exact(torch.tensor([sequence])).logits[0]
    positions = [0, 1, 31, WINDOW - 1]
    reference = {
        "note": "transformers Phi3ForCausalLM in float64 on the stored weights; greedy without EOS stop up to "
                "the sliding window's length; logits_at[p] = logits after feeding (prompt_ids + greedy_ids)[0..p]",
        "prompt_ids": prompt, "greedy_ids": greedy, "greedy_logprobs": logprobs,
        "logits_at": {str(p): everything[p].tolist() for p in positions},
    }
    with open(os.path.join(out, "phi3-fused.reference.json"), "w") as f:
        json.dump(reference, f)
    print("greedy", greedy)

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
