"""The kept positions are exactly the tokens after the control, for all four LatentQA variants and two templates."""

import copy

import pytest

from latentqa.dialogs import PLAIN_TEMPLATE, VARIANTS, encode_dialog, ensure_chat_template, render
from tests.conftest import DIALOGS

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

D = DIALOGS[0]
CHATML_KEPT = {
    "system": f"<|im_start|>user\n{D['stimulus_user']}<|im_end|>\n<|im_start|>assistant\n",
    "stimulus": f"<|im_start|>user\n{D['stimulus_user']}<|im_end|>\n<|im_start|>assistant\n",
    "stimulus_completion": f"<|im_start|>user\n{D['stimulus_user']}<|im_end|>\n<|im_start|>assistant\n"
                           f"{D['stimulus_model']}<|im_end|>\n",
    "control": f"<|im_start|>user\n{D['control_user']}<|im_end|>\n<|im_start|>assistant\n",
}
H = "<|start_header_id|>{}<|end_header_id|>\n\n"
LLAMA3_KEPT = {
    "system": f"{H.format('user')}{D['stimulus_user']}<|eot_id|>{H.format('assistant')}",
    "stimulus": f"{H.format('user')}{D['stimulus_user']}<|eot_id|>{H.format('assistant')}",
    "stimulus_completion": f"{H.format('user')}{D['stimulus_user']}<|eot_id|>{H.format('assistant')}"
                           f"{D['stimulus_model']}<|eot_id|>",
    "control": f"<|begin_of_text|>{H.format('user')}{D['control_user']}<|eot_id|>{H.format('assistant')}",
}


@pytest.fixture(scope="module")
def llama3_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>", "additional_special_tokens":
                            ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


@pytest.mark.parametrize("variant", VARIANTS)
def test_chatml_kept_tokens(tokenizer, variant):
    enc = encode_dialog(tokenizer, D, variant)
    assert tokenizer.decode(enc.token_ids[enc.n_prefix:]) == CHATML_KEPT[variant]
    assert "SmolLM" not in tokenizer.decode(enc.token_ids)  # the template's default system prompt is removed
    if variant != "control":
        assert D["control_user"] in tokenizer.decode(enc.token_ids[: enc.n_prefix])


@pytest.mark.parametrize("variant", VARIANTS)
def test_llama3_kept_tokens(llama3_tokenizer, variant):
    enc = encode_dialog(llama3_tokenizer, D, variant)
    assert llama3_tokenizer.decode(enc.token_ids[enc.n_prefix:]) == LLAMA3_KEPT[variant]
    assert llama3_tokenizer.decode(enc.token_ids).startswith("<|begin_of_text|>")


def test_explicit_system_prompt_is_kept(tokenizer):
    text = render(tokenizer, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_empty_dialog_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="stimulus_user is empty"):
        encode_dialog(tokenizer, {**D, "stimulus_user": " "}, "stimulus")


# Gemma's template (abridged): a system turn is folded into the first user turn, so alone it renders nothing
FOLDING_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for m in loop_messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ first if loop.first else '' }}{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


@pytest.mark.parametrize("template", [None, FOLDING_TEMPLATE], ids=["no template (a base model)", "folds system"])
def test_a_template_that_cannot_mask_the_control_gets_the_plain_one(tokenizer, template):
    """Without this, a base model fails to render and a folding template leaves the control in the read tokens."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    assert ensure_chat_template(tok) == "plain" and tok.chat_template == PLAIN_TEMPLATE
    for variant in VARIANTS:
        enc = encode_dialog(tok, DIALOGS[0], variant)
        read = tok.decode(enc.token_ids[enc.n_prefix:])
        if variant != "control":  # the control variant reads the control alone, by design
            assert DIALOGS[0]["control_user"] not in read and DIALOGS[0]["stimulus_user"] in read
            assert DIALOGS[0]["control_user"] in tok.decode(enc.token_ids[:enc.n_prefix])


def test_a_template_that_masks_the_control_is_kept(tokenizer):
    tok = copy.deepcopy(tokenizer)
    before = tok.chat_template
    assert ensure_chat_template(tok) == "model" and tok.chat_template == before
