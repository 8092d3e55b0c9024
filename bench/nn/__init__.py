"""Torch building blocks that several methods share.

- `bench.nn.timm_net`: timm classifiers with one smoke logit and CAM feature access (CNN, ViT);
- `bench.nn.train`: the classifier training loop and its `TrainSettings`;
- `bench.nn.classifier_cam`: `ClassifierCam`, the CAM source on such a classifier;
- `bench.nn.segmenter`: `TorchSegmenter`, the engine of stage-3 segmenters;
- `bench.nn.crf_loss`: `DenseCRFLoss`, the DenseCRF regularised loss.
- `bench.nn.boundary_net`: `BoundaryNet`, IRN's boundary network, and its training (the
  `affinity` refiner).

Initial weights come from `bench.weights`, torch-free map helpers from `bench.maps`. Importing
this package imports nothing (each module imports torch itself).
"""
