"""cifarsep_lib: the helper library shared by the cifarsep notebooks.

Modules: ``data`` (loading CIFAR-10), ``layers`` (SpatiallySeparableConv2D and a faster
BatchNormalization), ``whitening`` (a fixed whitening first layer, airbench's, made
separable), ``models`` (the base model and the series' SepNet), ``rules`` (the
assignment's rules check), ``training`` (the recipe and ``train()``), ``distillation`` (trained
networks as teachers: their probabilities as training targets), ``input_pipeline``
(augmentation and batches), ``callbacks`` (a run's clock, time budget, test points and
checkpoints), ``devices`` (what Keras trains on; data-parallel training), ``batchnorm``
(BatchNorm statistics recomputed for the final weights), ``evaluation``
(predictions, test accuracy), ``speed`` (training and inference images/s), ``theory``
(convolution costs, rank-1 kernels), ``anatomy`` (a model's receptive fields and costs, layer
by layer), ``analysis`` (confusions,
calibration, saliency) and ``plots``.
"""

__version__ = "0.1.0"

# The GitHub repository the Colab badges and setup cells point at (kept in one place).
REPO_URL = "https://github.com/cifarsep/cifarsep"
