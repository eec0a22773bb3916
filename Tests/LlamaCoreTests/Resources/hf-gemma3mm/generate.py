"""A small Gemma3ForConditionalGeneration (Gemma 3 4B and up: a vision tower, its projector and a text model) whose
text model is ../hf-gemma3/gemma3-tiny's, weight for weight, in the two layouts a reader meets: `gemma3-mm` as
transformers saves it and the Hub's checkpoints hold it (language_model.model.*, language_model.lm_head,
vision_tower.*, multi_modal_projector.*), and `gemma3-mm-modules` under the names of transformers 5's modules
(model.language_model.*, model.vision_tower.*, model.multi_modal_projector.*, lm_head) with a text_config that leaves
out the keys at Gemma3TextConfig's defaults (rms_norm_eps, hidden_activation), as the Hub's configs do; each with a
chat_template.json (the processor's) in place of a template in tokenizer_config.json. The script checks that
transformers gives each the text model's float64 logits on a text-only sequence, so gemma3-tiny.reference.json is
theirs too: `python generate.py .` (transformers 5.x, torch) run in this folder."""
import json, os, shutil, sys
import torch
from safetensors.torch import load_file, save_file
from transformers import Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "hf-gemma3", "gemma3-tiny")
CHAT = os.path.join(HERE, "..", "hf-gemma3", "gemma3-chat")

def main(out):
    torch.manual_seed(29)
    text = Gemma3TextConfig.from_pretrained(TINY)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    config = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                          boi_token_index=250, eoi_token_index=251, image_token_index=252,
                          bos_token_id=2, eos_token_id=[1, 106], pad_token_id=0)
    model = Gemma3ForConditionalGeneration(config)
    causal = Gemma3ForCausalLM.from_pretrained(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        model.model.language_model.load_state_dict(causal.model.state_dict())
    directory = os.path.join(out, "gemma3-mm")
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    template = json.load(open(os.path.join(CHAT, "tokenizer_config.json")))["chat_template"]
    with open(os.path.join(directory, "chat_template.json"), "w") as f:
        json.dump({"chat_template": template}, f, indent=1)
    # transformers 5's module names, and a text_config without the keys at their defaults.
    modules = os.path.join(out, "gemma3-mm-modules")
    shutil.rmtree(modules, ignore_errors=True)
    shutil.copytree(directory, modules)
    state = load_file(os.path.join(directory, "model.safetensors"))
    assert any(name.startswith("language_model.model.") for name in state)
    renamed = {}
    for name, tensor in state.items():
        if name.startswith("language_model.model."):
            name = "model.language_model." + name[len("language_model.model."):]
        elif name == "language_model.lm_head.weight":
            name = "lm_head.weight"
        else:
            name = "model." + name
        renamed[name] = tensor
    save_file(renamed, os.path.join(modules, "model.safetensors"), metadata={"format": "pt"})
    sparse = json.load(open(os.path.join(modules, "config.json")))
    for key in ["rms_norm_eps", "hidden_activation"]:
        del sparse["text_config"][key]
    with open(os.path.join(modules, "config.json"), "w") as f:
        json.dump(sparse, f, indent=2)
    exact = Gemma3ForCausalLM.from_pretrained(TINY, dtype=torch.float64, attn_implementation="eager").eval()
    reference = json.load(open(os.path.join(HERE, "..", "hf-gemma3", "gemma3-tiny.reference.json")))
    sequence = reference["prompt_ids"] + reference["greedy_ids"]
    with torch.no_grad():
        want = exact(torch.tensor([sequence])).logits[0]
        for d in (directory, modules):
            loaded = Gemma3ForConditionalGeneration.from_pretrained(d, dtype=torch.float64, attn_implementation="eager").eval()
            got = loaded(input_ids=torch.tensor([sequence])).logits[0]
            print(d, "max difference from gemma3-tiny's logits", float((got - want).abs().max()))
            assert (got - want).abs().max() < 1e-9, d

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
