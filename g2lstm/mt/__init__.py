"""Attention encoder-decoder translation with LSTM, sharpened-sigmoid or G2-LSTM recurrent layers.

- :mod:`g2lstm.mt.tokenizer` sentencepiece models trained on the training split, stored as bytes
- :mod:`g2lstm.mt.model` bidirectional encoder, attention decoder with input feeding
- :mod:`g2lstm.mt.batching` token-count batches over length-sorted buckets
- :mod:`g2lstm.mt.decode` greedy and batched beam search, ``translate`` for lists of sentences
- :mod:`g2lstm.mt.evaluate` sacreBLEU / chrF / tokenized BLEU, ``bleu_of`` a model on pairs
- :mod:`g2lstm.mt.train` ``train(cfg)``: the training loop with checkpoints and exact resume
"""
