"""Studies of streamlev on real models (optional extras; the core library never imports this package).

Each study is a module run with ``python -m streamlev.eval.<name>``; for
example :mod:`streamlev.eval.minilm` compares key-selection rules inside the
softmax attention of sentence-transformers/all-MiniLM-L6-v2 and exports the
bundled sample read by :func:`streamlev.datasets.load_minilm_keys`.  Running
a study needs its extra (torch and friends); importing this package does not.
"""
