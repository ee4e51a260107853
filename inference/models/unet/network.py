"""The 2D U-Net with a lesion segmentation output and a case-class head."""

from __future__ import annotations

import torch
from monai.networks.nets import BasicUNet
from torch import nn

from inference.models.unet.slices import CLASSES, UNetConfig


class SegmentClassifyUNet(nn.Module):
    """MONAI's BasicUNet plus a three-class head on pooled bottleneck and decoder features.

    The class head reads the bottleneck's mean and maximum, and the last decoder level's
    features averaged over the predicted lesion. That last term lets the head see the lesion's
    own attenuation and texture rather than the whole slice.
    """

    def __init__(self, config: UNetConfig, class_count: int = len(CLASSES)) -> None:
        super().__init__()
        self.unet = BasicUNet(
            spatial_dims=2,
            in_channels=config.in_channels,
            out_channels=1,
            features=config.features,
        )
        bottleneck_channels = config.features[4]
        decoder_channels = config.features[5]
        self.classifier = nn.Sequential(
            nn.Linear(2 * bottleneck_channels + decoder_channels, config.classifier_hidden),
            nn.LeakyReLU(0.1),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden, class_count),
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return mask logits (batch, 1, size, size) and class logits (batch, classes)."""
        unet = self.unet
        # The same stages in the same order as BasicUNet.forward (MONAI 1.6.1), called one by
        # one because the class head needs the bottleneck and last decoder outputs.
        x0 = unet.conv_0(images)
        x1 = unet.down_1(x0)
        x2 = unet.down_2(x1)
        x3 = unet.down_3(x2)
        bottleneck = unet.down_4(x3)
        u4 = unet.upcat_4(bottleneck, x3)
        u3 = unet.upcat_3(u4, x2)
        u2 = unet.upcat_2(u3, x1)
        decoder = unet.upcat_1(u2, x0)
        mask_logits = unet.final_conv(decoder)

        # Detached so that the class loss cannot grow the mask to suit the classifier. Only the
        # segmentation loss trains the mask.
        attention = torch.sigmoid(mask_logits).detach()
        lesion_features = (decoder * attention).sum(dim=(2, 3)) / (attention.sum(dim=(2, 3)) + 1.0)
        pooled = torch.cat(
            [bottleneck.mean(dim=(2, 3)), bottleneck.amax(dim=(2, 3)), lesion_features], dim=1
        )
        return mask_logits, self.classifier(pooled)
