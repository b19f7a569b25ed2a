"""Latin -> Cyrillic transliteration with a character-level bidirectional G2LSTM.

- :mod:`g2lstm.translit.model` char embedding -> bidirectional G2LSTM -> dense, per input character
- :mod:`g2lstm.translit.train` ``train(cfg, run_dir)`` on the romanised Russian Synodal Bible
- :mod:`g2lstm.translit.task` the trained model for ``g2lstm.load`` and the tools
"""
