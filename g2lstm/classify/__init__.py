"""Sentence classification with LSTM, sharpened-sigmoid or G2-LSTM recurrent layers.

- :mod:`g2lstm.classify.model` embedding -> (bi)G2LSTM -> pooling -> linear (also a per-token tagger)
- :mod:`g2lstm.classify.train` ``train(cfg, run_dir)``: sentence polarity on Rotten Tomatoes
- :mod:`g2lstm.classify.task` the trained classifier for ``g2lstm.load`` and the tools
"""
