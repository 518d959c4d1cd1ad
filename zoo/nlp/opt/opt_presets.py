"""OPT catalog entries (data only). Parameter counts are computed from each
model's published config (tied LM head counted once)."""

PRESETS = {
    "opt_125m_en": {
        "family": "opt",
        "description": "OPT-125m: 12-layer, 768-wide English decoder (Zhang et al., 2022).",
        "params": 125_239_296,
        "sources": ["hf://facebook/opt-125m"],
        "license": "OPT license (research)",
    },
    "opt_350m_en": {
        "family": "opt",
        "description": "OPT-350m: 24-layer, 1024-wide, post-layer-norm, 512-dim embeddings English decoder (Zhang et al., 2022).",
        "params": 331_196_416,
        "sources": ["hf://facebook/opt-350m"],
        "license": "OPT license (research)",
    },
    "opt_1.3b_en": {
        "family": "opt",
        "description": "OPT-1.3b: 24-layer, 2048-wide English decoder (Zhang et al., 2022).",
        "params": 1_315_758_080,
        "sources": ["hf://facebook/opt-1.3b"],
        "license": "OPT license (research)",
    },
    "opt_2.7b_en": {
        "family": "opt",
        "description": "OPT-2.7b: 32-layer, 2560-wide English decoder (Zhang et al., 2022).",
        "params": 2_651_596_800,
        "sources": ["hf://facebook/opt-2.7b"],
        "license": "OPT license (research)",
    },
    "opt_6.7b_en": {
        "family": "opt",
        "description": "OPT-6.7b: 32-layer, 4096-wide English decoder (Zhang et al., 2022).",
        "params": 6_658_473_984,
        "sources": ["hf://facebook/opt-6.7b"],
        "license": "OPT license (research)",
    },
    "opt_13b_en": {
        "family": "opt",
        "description": "OPT-13b: 40-layer, 5120-wide English decoder (Zhang et al., 2022).",
        "params": 12_853_473_280,
        "sources": ["hf://facebook/opt-13b"],
        "license": "OPT license (research)",
    },
    "opt_30b_en": {
        "family": "opt",
        "description": "OPT-30b: 48-layer, 7168-wide English decoder (Zhang et al., 2022).",
        "params": 29_974_540_288,
        "sources": ["hf://facebook/opt-30b"],
        "license": "OPT license (research)",
    },
    "opt_66b_en": {
        "family": "opt",
        "description": "OPT-66b: 64-layer, 9216-wide English decoder (Zhang et al., 2022).",
        "params": 65_719_701_504,
        "sources": ["hf://facebook/opt-66b"],
        "license": "OPT license (research)",
    },
}
