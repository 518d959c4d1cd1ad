"""BERT: backbone, tokenizer, preprocessors, classifier, masked LM, embedder."""

from zoo.nlp.bert.bert_backbone import BertBackbone
from zoo.nlp.bert.bert_masked_lm import BertMaskedLM
from zoo.nlp.bert.bert_masked_lm_preprocessor import BertMaskedLMPreprocessor
from zoo.nlp.bert.bert_preprocessor import BertPreprocessor
from zoo.nlp.bert.bert_text_classifier import BertTextClassifier
from zoo.nlp.bert.bert_text_embedder import BertTextEmbedder
from zoo.nlp.bert.bert_tokenizer import BertTokenizer

__all__ = [
    "BertBackbone", "BertMaskedLM", "BertMaskedLMPreprocessor", "BertPreprocessor",
    "BertTextClassifier", "BertTextEmbedder", "BertTokenizer",
]
