"""Word-level language modelling with G2-LSTM: the AWD-LSTM recipe on modern PyTorch.

``model.AWDLSTM`` is the network, ``train.train(cfg)`` the trainer (Hydra config in g2lstm/conf/lm),
``evaluate`` the perplexity with and without the continuous cache pointer.
"""
