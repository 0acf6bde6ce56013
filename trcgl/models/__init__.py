"""Models: the ConvNeXtV2 backbone, channel-class attention, the label co-occurrence GCN, TRCGL-Net."""
from .backbone import Backbone
from .cca import ChannelClassAttention, ChannelGate, ClassAwareAttention
from .label_gcn import LabelGCN, adjacency, label_adjacency, released_label_adjacency
from .trcgl_net import BACKBONE_KEYS, TRCGLNet, build_backbone, build_model

__all__ = ["Backbone", "ChannelGate", "ClassAwareAttention", "ChannelClassAttention", "LabelGCN",
           "label_adjacency", "released_label_adjacency", "adjacency", "TRCGLNet", "build_model", "build_backbone",
           "BACKBONE_KEYS"]
