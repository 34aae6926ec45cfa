"""Everything that speaks DICOM over the network, with pynetdicom: receiving, pulling, peers."""
