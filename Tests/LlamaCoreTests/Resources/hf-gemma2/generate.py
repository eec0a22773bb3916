"""A small random-weight Gemma2ForCausalLM directory (Gemma 3's blocks without query/key norms, with tanh
softcapping of the attention scores, attn_logit_softcapping, and of the logits, final_logit_softcapping, both
set low enough to bind; query_pre_attn_scalar 24 apart from head_dim 16; layers 0 and 2 sliding-window layers
with a window of 48 within max_position_embeddings 512) and the same trunk as a one-label
Gemma2ForSequenceClassification, with transformers' float64 outputs on the stored weights: greedy ids and logits
over a sequence that fills the window, the masked next-token cross-entropy of two sequences with its gradient for
every tensor (names as the file spells them, rows in its order), and the reward model's scores of two sequences:
`python generate.py .` (transformers 5.x, torch) run in this folder."""
import json, os, shutil, sys
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma2ForSequenceClassification

WINDOW = 48

def main(out):
    torch.manual_seed(29)
    config = Gemma2Config(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
                          max_position_embeddings=512, sliding_window=WINDOW,
                          layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                          attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                          rms_norm_eps=1e-6, bos_token_id=2, eos_token_id=1, pad_token_id=0, tie_word_embeddings=True)
    model = Gemma2ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(-0.5, 0.5)
            elif "embed" in name:
                p.normal_(0, 0.1)
            else:
                p.normal_(0, 0.3)
    directory = os.path.join(out, "gemma2-softcap")
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    exact = Gemma2ForCausalLM.from_pretrained(directory, dtype=torch.float64, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(7)
    prompt = [2] + torch.randint(3, 256, (15,), generator=g).tolist()
    sequence, greedy, logprobs = list(prompt), [], []
    with torch.no_grad():
        while len(sequence) < WINDOW:
            logits = exact(torch.tensor([sequence])).logits[0, -1]
            token = int(logits.argmax())
            greedy.append(token)
            logprobs.append(float(torch.log_softmax(logits, -1)[token]))
            sequence.append(token)
        everything = exact(torch.tensor([sequence])).logits[0]
    positions = [0, 1, 15, WINDOW - 1]
    tokens = [[2] + torch.randint(3, 256, (23,), generator=g).tolist(), [2] + torch.randint(3, 256, (23,), generator=g).tolist()]
    mask = [[float(t >= 4) for t in range(23)], [float(t % 3 != 0) for t in range(23)]]
    exact.zero_grad()
    inputs = torch.tensor([s[:-1] for s in tokens])
    targets = torch.tensor([s[1:] for s in tokens])
    logp = torch.log_softmax(exact(inputs).logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    m = torch.tensor(mask, dtype=torch.float64)
    loss = -(m * logp).sum() / m.sum()
    loss.backward()
    grads = {name: p.grad.reshape(-1).tolist() for name, p in exact.named_parameters()}
    rm_config = Gemma2Config.from_dict(config.to_dict())
    rm_config.num_labels = 1
    reward = Gemma2ForSequenceClassification(rm_config)
    with torch.no_grad():
        reward.model.load_state_dict({k[len("model."):]: v for k, v in model.state_dict().items() if k != "lm_head.weight"})
        reward.score.weight.normal_(0, 0.3)
    rm_directory = os.path.join(out, "gemma2-softcap-rm")
    shutil.rmtree(rm_directory, ignore_errors=True)
    reward.save_pretrained(rm_directory)
    exact_rm = Gemma2ForSequenceClassification.from_pretrained(rm_directory, dtype=torch.float64, attn_implementation="eager").eval()
    with torch.no_grad():
        scores = [float(exact_rm(torch.tensor([s])).logits[0, 0]) for s in tokens]
    reference = {
        "note": "transformers Gemma2ForCausalLM in float64 on the stored weights (eager attention); greedy without EOS stop "
                "up to the sliding window's length; logits_at[p] = logits after feeding (prompt_ids + greedy_ids)[0..p]; "
                "sft: masked cross-entropy and its gradient for every tensor, flattened in the file's row order; "
                "reward_scores: gemma2-softcap-rm's score of each sft sequence at its last token",
        "prompt_ids": prompt, "greedy_ids": greedy, "greedy_logprobs": logprobs,
        "logits_at": {str(p): everything[p].tolist() for p in positions},
        "sft": {"tokens": tokens, "mask": mask, "loss": float(loss.detach()), "gradients": grads},
        "reward_scores": scores,
    }
    with open(os.path.join(out, "gemma2-softcap.reference.json"), "w") as f:
        json.dump(reference, f)
    print("greedy", greedy, "loss", float(loss.detach()), "scores", scores)

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
