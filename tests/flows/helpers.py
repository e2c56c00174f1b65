"""The tiny test configuration shared by the flow and deployment tests."""

from latentqa.config import RunConfig


def tiny_config(root, model_dir, **train) -> RunConfig:
    return RunConfig.model_validate({
        "model": {"name": str(model_dir)},
        "endpoint": {"local_model": str(model_dir), "max_batch": 8},
        "catalog": {"n_controls": 8},
        "synthesize": {"n_description": 2, "n_implication": 1, "max_chars": 24, "max_tokens": 96, "max_fail_fraction": 0.9},
        "extract": {"read_layers": [2], "part_tokens": 64},
        "filter": {"min_answer_chars": 1},
        "train": {"lora_r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "batch_size": 4, **train},
        "evaluate": {"max_new_tokens": 4, "max_examples": 4, "relational_facts": 4},
        "storage": {"root": str(root)},
    })
