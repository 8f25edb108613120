"""Detection and segmentation annotation formats, read into and written from augforge's target model
(``augforge.datasets.targets``): COCO JSON, Pascal VOC XML, YOLO txt (boxes and polygons) and LabelMe JSON."""
