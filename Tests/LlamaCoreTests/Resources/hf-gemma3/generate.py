"""A small random-weight Gemma3ForCausalLM directory (GeGLU, the embedding scaled by sqrt(hidden_size), RMSNorms
that scale by 1 + weight, norms on each block's attention and feed-forward outputs, per-head query/key norms,
query_pre_attn_scalar 24 apart from head_dim 16, grouped-query attention, tied embeddings; layers 0 and 2
sliding-window layers with RoPE base 10000, layer 1 a full-attention layer with base 1e6; a window of 48 within
max_position_embeddings 512) and the same trunk as a one-label Gemma3TextForSequenceClassification, with
transformers' float64 outputs on the stored weights: greedy ids and logits over a sequence that fills the window,
the masked next-token cross-entropy of two sequences with its gradient for every tensor (names as the file spells
them, rows in its order), and the reward model's scores of two sequences. Beside them `gemma3-chat`, a model
with the Gemma-style tokenizer of ../hf-tokenizers (gemma.tokenizer.json) and Gemma 3's chat template (from
Tests/JinjaTests/Resources/generate.py), with transformers' rendering of a conversation and its greedy answer:
`python generate.py .` (transformers 5.x, torch) run in this folder."""
import json, os, shutil, sys
import torch
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "JinjaTests", "Resources"))
from generate import TEMPLATES
from transformers import Gemma3TextConfig, Gemma3ForCausalLM, Gemma3TextForSequenceClassification

WINDOW = 48

def main(out):
    torch.manual_seed(17)
    config = Gemma3TextConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
                              max_position_embeddings=512, sliding_window=WINDOW,
                              layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                              rms_norm_eps=1e-6, bos_token_id=2, eos_token_id=1, pad_token_id=0,
                              tie_word_embeddings=True)
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Gemma stores a norm's weight as its scale minus 1: around 0.
            if "norm" in name:
                p.uniform_(-0.5, 0.5)
            elif "embed" in name:
                p.normal_(0, 0.1)
            else:
                p.normal_(0, 0.3)
    directory = os.path.join(out, "gemma3-tiny")
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    exact = Gemma3ForCausalLM.from_pretrained(directory, dtype=torch.float64, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(7)
    prompt = [2] + torch.randint(3, 256, (15,), generator=g).tolist()
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
    positions = [0, 1, 15, WINDOW - 1]
    # SFT: loss = -sum(mask * logp(target)) / sum(mask) over tokens[:, 1:], inputs tokens[:, :-1].
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
    # The reward model: the same trunk and a one-label score head, scoring each sequence at its last token.
    rm_config = Gemma3TextConfig.from_dict(config.to_dict())
    rm_config.num_labels = 1
    reward = Gemma3TextForSequenceClassification(rm_config)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    with torch.no_grad():
        reward.model.load_state_dict({k[len("model."):]: v for k, v in state.items()})
        reward.score.weight.normal_(0, 0.3)
    rm_directory = os.path.join(out, "gemma3-tiny-rm")
    shutil.rmtree(rm_directory, ignore_errors=True)
    reward.save_pretrained(rm_directory)
    exact_rm = Gemma3TextForSequenceClassification.from_pretrained(rm_directory, dtype=torch.float64, attn_implementation="eager").eval()
    with torch.no_grad():
        scores = [float(exact_rm(torch.tensor([s])).logits[0, 0]) for s in tokens]
    reference = {
        "note": "transformers Gemma3ForCausalLM in float64 on the stored weights (eager attention); greedy without EOS stop "
                "up to the sliding window's length; logits_at[p] = logits after feeding (prompt_ids + greedy_ids)[0..p]; "
                "sft: masked cross-entropy and its gradient for every tensor, flattened in the file's row order; "
                "reward_scores: gemma3-tiny-rm's score of each sft sequence at its last token",
        "prompt_ids": prompt, "greedy_ids": greedy, "greedy_logprobs": logprobs,
        "logits_at": {str(p): everything[p].tolist() for p in positions},
        "sft": {"tokens": tokens, "mask": mask, "loss": float(loss.detach()), "gradients": grads},
        "reward_scores": scores,
    }
    reference["chat"] = chat_model(out)
    with open(os.path.join(out, "gemma3-tiny.reference.json"), "w") as f:
        json.dump(reference, f)
    print("greedy", greedy, "loss", float(loss.detach()), "scores", scores)

def chat_model(out):
    """gemma3-chat: a vocabulary the size of the Gemma-style tokenizer's, its files and Gemma 3's template."""
    from transformers import AutoTokenizer
    tokenizer_file = os.path.join(HERE, "..", "hf-tokenizers", "gemma.tokenizer.json")
    vocab = len(json.load(open(tokenizer_file))["model"]["vocab"]) + 2  # and the two turn markers
    torch.manual_seed(19)
    config = Gemma3TextConfig(vocab_size=vocab, hidden_size=64, intermediate_size=192, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
                              sliding_window=96, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                              rms_norm_eps=1e-6, bos_token_id=2, eos_token_id=1, pad_token_id=0, tie_word_embeddings=True)
    # transformers' own initialisation (a model a run can teach), its norms' weights moved off 0.
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(-0.1, 0.1)
    directory = os.path.join(out, "gemma3-chat")
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    shutil.copy(tokenizer_file, os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "chat_template": TEMPLATES["gemma3"]}, f, indent=1)
    # Gemma's generation config stops at EOS and at the end of a turn.
    generation = json.load(open(os.path.join(directory, "generation_config.json")))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    generation["eos_token_id"] = [1, tokenizer.convert_tokens_to_ids("<end_of_turn>")]
    with open(os.path.join(directory, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=1)
    assert tokenizer.vocab_size <= vocab
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about the fox."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    exact = Gemma3ForCausalLM.from_pretrained(directory, dtype=torch.float64, attn_implementation="eager").eval()
    with torch.no_grad():
        generated = exact.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None)
    return {"system": messages[0]["content"], "user": messages[1]["content"], "prompt_ids": ids,
            "greedy_ids": generated[0, len(ids):].tolist()}

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
