"""Pre-training of the FastProtect mixture (``python -m train``) and its evaluation
(``python -m train.evaluate``). Importing this package is cheap: nothing is loaded or built."""
